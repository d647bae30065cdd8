//! The daemon of an `ssh://` DOCKER_HOST or context, reached as the docker CLI reaches it: each
//! connection is `ssh -T -- [user@]host docker system dial-stdio`, HTTP over the standard input
//! and output of the docker CLI on the manager. The user's ssh does the authenticating with
//! what it already has (its config, keys, agent, known hosts), in batch mode: labd has no one
//! to type a password or accept a host key.
//!
//! Written here rather than taken from bollard's `ssh` feature (through the `openssh` crate):
//! that one drops the port of `ssh://host:2222`, and accepts unknown host keys
//! (StrictHostKeyChecking=accept-new) where the docker CLI, and so a user's shell, refuses them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Where `ssh://[user@]host[:port]` points.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SshTarget {
    /// `[user@]host`, as ssh takes it.
    pub destination: String,
    pub port: Option<u16>,
}

impl SshTarget {
    /// `ssh://[user@]host[:port]`; a path after it is refused, as the docker CLI refuses it.
    pub(crate) fn parse(url: &str) -> Result<SshTarget, String> {
        let rest = url.strip_prefix("ssh://").ok_or_else(|| format!("{url}: not an ssh:// address"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('?') {
            return Err(format!("{url}: an ssh:// address names a host, no path (ssh://[user@]host[:port])"));
        }
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, authority),
        };
        // An IPv6 address is bracketed in a URL (`[fd00::5]:22`), and given to ssh bare.
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or_else(|| format!("{url}: no `]` after the IPv6 address"))?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = port.map(|p| p.parse().map_err(|_| format!("{url}: `{p}` is not a port"))).transpose()?;
        if host.is_empty() {
            return Err(format!("{url}: no host (ssh://[user@]host[:port])"));
        }
        let destination = match user {
            Some(user) => format!("{user}@{host}"),
            None => host.to_string(),
        };
        Ok(SshTarget { destination, port })
    }

    /// The ssh command that runs `remote` on the manager, as the docker CLI runs it (no tty, a
    /// 30 s connect timeout) and in batch mode.
    pub(crate) fn command(&self, remote: &[&str]) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-T"]);
        if let Some(port) = self.port {
            ssh.args(["-p", &port.to_string()]);
        }
        ssh.arg("--").arg(&self.destination).args(remote);
        ssh
    }

    /// The command line as a user would type it to try it.
    pub(crate) fn shown(&self) -> String {
        let port = self.port.map(|p| format!("-p {p} ")).unwrap_or_default();
        format!("ssh -o BatchMode=yes {port}{} docker system dial-stdio", self.destination)
    }

    /// What ssh says when it cannot run the docker CLI there (a refused key, an unknown host
    /// key, no `docker` on the manager), by trying once with nothing to relay: `None` when it
    /// ran.
    pub(crate) async fn diagnose(&self) -> Option<String> {
        let run = self.command(&["docker", "system", "dial-stdio"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).output();
        match tokio::time::timeout(std::time::Duration::from_secs(35), run).await {
            Ok(Ok(out)) if out.status.success() => None,
            Ok(Ok(out)) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()).filter(|s| !s.is_empty()).or(Some(format!("ssh exited with {}", out.status))),
            Ok(Err(e)) => Some(format!("cannot run ssh: {e}")),
            Err(_) => Some("ssh did not finish within 35 s".into()),
        }
    }
}

/// ssh connections being set up at once. sshd drops unauthenticated connections beyond its
/// MaxStartups (from 10, at random, by default), and labd sends up to 16 requests at once:
/// measured with a 24-service lab, sshd saw 15 logins under way together, and with
/// `MaxStartups 4` 12 of the 24 creates failed at first. One count for the whole process: labd's
/// controller, agent and status page each hold a client, and sshd counts them all.
const DIALING_AT_ONCE: usize = 4;
static DIALING: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> = std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(DIALING_AT_ONCE)));

/// A Docker client whose every connection is a `docker system dial-stdio` over ssh.
pub(crate) fn docker(target: SshTarget, timeout: u64) -> Result<bollard::Docker, bollard::errors::Error> {
    // The URL bollard builds its requests on: the dialer ignores it, and `user@fd00::5` would
    // not parse as one.
    let address = "ssh://docker";
    let dialer = Dialer { target: Arc::new(target), dialing: DIALING.clone() };
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(dialer);
    bollard::Docker::connect_with_custom_transport(
        move |request: bollard::BollardRequest| {
            let client = client.clone();
            async move { client.request(request).await.map_err(bollard::errors::Error::from) }
        },
        Some(address),
        timeout,
        bollard::API_DEFAULT_VERSION,
    )
}

/// Opens connections: one ssh process each (hyper keeps them for reuse, as with sockets).
#[derive(Clone)]
struct Dialer {
    target: Arc<SshTarget>,
    /// A permit per connection until its first answer (its login done) or its end.
    dialing: Arc<tokio::sync::Semaphore>,
}

impl tower_service::Service<hyper::Uri> for Dialer {
    type Response = TokioIo<SshStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let (target, dialing) = (self.target.clone(), self.dialing.clone());
        Box::pin(async move {
            let permit = dialing.acquire_owned().await.map_err(io::Error::other)?;
            let mut child = target
                .command(&["docker", "system", "dial-stdio"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                // What ssh says on failure is found by `diagnose`, once, not per connection.
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(io::Error::other("ssh started without its standard input and output"));
            };
            Ok(TokioIo::new(SshStream { _ssh: child, stdin, stdout, dialing: Some(permit) }))
        })
    }
}

/// One connection: the ssh process (ended with it) and its standard input and output.
struct SshStream {
    _ssh: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    dialing: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for SshStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.stdout).poll_read(cx, buf);
        if read.is_ready() {
            // An answer came (so ssh logged in), or the connection ended: no longer dialing.
            this.dialing = None;
        }
        read
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stdin).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssh_address_gives_the_destination_and_port_ssh_takes() {
        let parse = |url: &str| SshTarget::parse(url).map(|t| (t.destination, t.port));
        assert_eq!(parse("ssh://me@manager"), Ok(("me@manager".into(), None)));
        assert_eq!(parse("ssh://me@manager:2222"), Ok(("me@manager".into(), Some(2222))));
        assert_eq!(parse("ssh://manager:22/"), Ok(("manager".into(), Some(22))));
        assert_eq!(parse("ssh://manager"), Ok(("manager".into(), None)));
        assert_eq!(parse("ssh://me@[fd00::5]:2222"), Ok(("me@fd00::5".into(), Some(2222))));
        assert_eq!(parse("ssh://[fd00::5]"), Ok(("fd00::5".into(), None)));
        assert!(parse("ssh://me@manager/var/run/docker.sock").unwrap_err().contains("no path"));
        assert!(parse("ssh://me@manager:ssh").unwrap_err().contains("not a port"));
        assert!(parse("ssh://me@").unwrap_err().contains("no host"));
        let ssh = SshTarget::parse("ssh://me@manager:2222").unwrap().command(&["docker", "system", "dial-stdio"]);
        let args: Vec<_> = ssh.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args.join(" "), "-o BatchMode=yes -o ConnectTimeout=30 -T -p 2222 -- me@manager docker system dial-stdio");
    }
}
