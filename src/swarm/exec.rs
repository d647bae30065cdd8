//! A command run in a task's container, as `docker exec`: what `labctl exec` runs in one task
//! or in every task of a service on this node.

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncWrite;

use super::{api_err, DockerSwarm, SwarmError};

/// A piece of what the command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// A command started in a task: its output as it comes, its input when asked for, and its id
/// for the exit code once the output ends.
pub struct TaskExec {
    pub id: String,
    pub output: BoxStream<'static, Result<ExecOutput, SwarmError>>,
    pub input: Option<Pin<Box<dyn AsyncWrite + Send>>>,
}

impl DockerSwarm {
    /// Starts `command` in the container (`stdin`: attach the command's standard input; `tty`:
    /// give it a terminal, whose output comes as one stream, on `Stdout`).
    pub async fn exec_in_task(&self, container: &str, command: &[String], stdin: bool, tty: bool) -> Result<TaskExec, SwarmError> {
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            ..Default::default()
        };
        let created = self.docker().create_exec(container, options).await.map_err(api_err("create exec"))?;
        let started = self.docker().start_exec(&created.id, Some(StartExecOptions::default())).await.map_err(api_err("start exec"))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(SwarmError::Api { action: "start exec".into(), message: "Docker started the command detached".into() });
        };
        let output = output
            .filter_map(|piece| async move {
                match piece {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => Some(Ok(ExecOutput::Stdout(message.to_vec()))),
                    Ok(LogOutput::StdErr { message }) => Some(Ok(ExecOutput::Stderr(message.to_vec()))),
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(api_err("read exec output")(e))),
                }
            })
            .boxed();
        Ok(TaskExec { id: created.id, output, input: stdin.then_some(input) })
    }

    /// Sets the size of a command's terminal (as `docker exec -t` does at start and on each
    /// resize of the local one).
    pub async fn resize_exec_terminal(&self, exec_id: &str, rows: u16, columns: u16) -> Result<(), SwarmError> {
        let size = bollard::exec::ResizeExecOptions { height: rows, width: columns };
        self.docker().resize_exec(exec_id, size).await.map_err(api_err("resize exec terminal"))
    }

    /// The command's exit code, once it has ended (`None` while it runs).
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, SwarmError> {
        let info = self.docker().inspect_exec(exec_id).await.map_err(api_err("inspect exec"))?;
        Ok(if info.running == Some(true) { None } else { info.exit_code })
    }

    /// The exit code of a command whose output has ended: Docker may mark it ended a moment
    /// after (asked every 20 ms, for up to a second).
    pub async fn exec_ended(&self, exec_id: &str) -> Result<i64, SwarmError> {
        for _ in 0..50 {
            if let Some(code) = self.exec_exit_code(exec_id).await? {
                return Ok(code);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(SwarmError::Api { action: "inspect exec".into(), message: "the command's output ended but Docker still says it runs".into() })
    }
}
