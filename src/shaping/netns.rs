//! Running tools inside a task's network namespace from the host, found from the container's
//! pid: the user's image needs no `tc`, no `iptables` and no NET_ADMIN.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("{command} in the namespace of pid {pid}: {message}")]
pub struct NetnsError {
    pub pid: i64,
    pub command: String,
    pub message: String,
}

/// `/proc/PID/ns/net` of a container's process. Inside the agent's own container the host's
/// procfs is mounted elsewhere (`LABD_PROC=/host/proc`), since Docker reports host pids.
pub fn ns_path(pid: i64) -> PathBuf {
    let proc_root = std::env::var("LABD_PROC").unwrap_or_else(|_| "/proc".to_string());
    PathBuf::from(format!("{proc_root}/{pid}/ns/net"))
}

/// Runs `program args…` in the network namespace of `pid`; returns its stdout.
pub async fn run_in(pid: i64, program: &str, args: &[String]) -> Result<String, NetnsError> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", ns_path(pid).display()))
        .arg(program)
        .args(args)
        .output()
        .await
        .map_err(|e| NetnsError { pid, command: program.into(), message: format!("cannot run nsenter: {e}") })?;
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
