//! Running tools inside a task's network namespace from the host, found from the container's
//! pid: the user's image needs no `tc`, no `iptables` and no NET_ADMIN.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("{command} in the namespace of pid {pid}: {message}")]
pub struct NetnsError {
    pub pid: i64,
    pub command: String,
    pub message: String,
}

/// The host's procfs: `/proc`, or where it is mounted inside the agent's own container
/// (`LABD_PROC=/host/proc`), since Docker reports host pids.
pub fn proc_root() -> PathBuf {
    PathBuf::from(std::env::var("LABD_PROC").unwrap_or_else(|_| "/proc".to_string()))
}

/// `/proc/PID/ns/net` of a container's process.
pub fn ns_path(pid: i64) -> PathBuf {
    proc_root().join(pid.to_string()).join("ns/net")
}

/// Whether `pid` is container `id`'s process on this machine: its cgroup names the container,
/// as every layout of Docker's does (`/docker/<id>`, `docker-<id>.scope`, nested or not). A
/// daemon on another machine (reached by DOCKER_HOST, a context, a forwarded socket) reports
/// that machine's pids, which here are another process or none; entering that one's namespace
/// would shape the wrong network. Unreadable (no host procfs here): taken as ours, as the
/// agent always did.
pub fn process_is_container(proc_root: &Path, pid: i64, id: &str) -> bool {
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")) {
        Ok(text) => !id.is_empty() && text.contains(id),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Runs `program args…` in the network namespace of `pid`; returns its stdout.
pub async fn run_in(pid: i64, program: &str, args: &[String]) -> Result<String, NetnsError> {
    run_in_with_input(pid, program, args, None).await
}

/// As `run_in`, with `input` on the program's stdin (`iptables-restore`'s batch of rules).
pub async fn run_in_with_input(pid: i64, program: &str, args: &[String], input: Option<&str>) -> Result<String, NetnsError> {
    use tokio::io::AsyncWriteExt;
    let cannot = |e: std::io::Error| NetnsError { pid, command: program.into(), message: format!("cannot run nsenter: {e}") };
    let mut child = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", ns_path(pid).display()))
        .arg(program)
        .args(args)
        .stdin(if input.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(cannot)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Dropped at the end of this block: the program sees the end of its input.
        stdin.write_all(input.as_bytes()).await.map_err(cannot)?;
    }
    let out = child.wait_with_output().await.map_err(cannot)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // Tools such as ping report on stdout and exit non-zero on a partial result.
        let message = if stderr.is_empty() { String::from_utf8_lossy(&out.stdout).into_owned() } else { stderr };
        Err(NetnsError { pid, command: format!("{program} {}", args.join(" ")), message })
    }
}

#[derive(Debug, Clone, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
struct IpAddr {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: String,
    #[serde(default)]
    prefixlen: u8,
}

/// Every IPv4 address inside the namespace: interface, address, prefix length.
pub async fn ipv4_addresses(pid: i64) -> Result<Vec<(String, std::net::Ipv4Addr, u8)>, NetnsError> {
    let json = run_in(pid, "ip", &["-j".into(), "addr".into(), "show".into()]).await?;
    let links: Vec<IpLink> = serde_json::from_str(&json).unwrap_or_default();
    Ok(links
        .into_iter()
        .flat_map(|l| {
            l.addr_info.into_iter().filter(|a| a.family == "inet").filter_map(move |a| Some((l.ifname.clone(), a.local.parse().ok()?, a.prefixlen)))
        })
        .collect())
}

/// The interface inside the namespace with this MAC address or IPv4 address.
pub async fn interface_for(pid: i64, mac: &str, ipv4: &str) -> Result<Option<String>, NetnsError> {
    let json = run_in(pid, "ip", &["-j".into(), "addr".into(), "show".into()]).await?;
    let links: Vec<IpLink> = serde_json::from_str(&json).unwrap_or_default();
    Ok(links
        .into_iter()
        .find(|l| {
            (!mac.is_empty() && l.address.eq_ignore_ascii_case(mac))
                || (!ipv4.is_empty() && l.addr_info.iter().any(|a| a.family == "inet" && a.local == ipv4))
        })
        .map(|l| l.ifname))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid is a container's only where its cgroup names the container: a daemon on another
    /// machine reports pids that here are another process, or none.
    #[test]
    fn a_pid_is_the_container_s_only_where_its_cgroup_names_the_container() {
        let proc = tempfile::tempdir().expect("a temp dir");
        let id = "27151a44c873d993649f1ee2df95c100e4b6f443cac130b7fc5e9b8e06dcd179";
        let cgroup = |pid: i64, text: &str| {
            std::fs::create_dir_all(proc.path().join(pid.to_string())).expect("a dir");
            std::fs::write(proc.path().join(pid.to_string()).join("cgroup"), text).expect("a file");
        };
        cgroup(100, &format!("9:name=systemd:/docker/{id}\n8:pids:/docker/{id}\n")); // v1, cgroupfs
        cgroup(101, &format!("0::/system.slice/docker-{id}.scope\n")); // v2, systemd
        cgroup(102, "0::/user.slice/user-1000.slice/session-2.scope\n"); // someone's shell
        assert!(process_is_container(proc.path(), 100, id));
        assert!(process_is_container(proc.path(), 101, id));
        assert!(!process_is_container(proc.path(), 102, id), "another process of this machine");
        assert!(!process_is_container(proc.path(), 103, id), "no such process here");
        assert!(!process_is_container(proc.path(), 100, ""), "no id to look for");
    }
}
