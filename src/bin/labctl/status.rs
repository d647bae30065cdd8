//! `labctl status [LAB] [-o json|yaml] [--watch]`.

use std::process::ExitCode;

use crate::common::*;
use crate::Output;

pub async fn run(url: &str, lab: Option<&str>, output: Output, watch: bool) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    loop {
        let names = match lab {
            Some(l) => vec![l.to_string()],
            None => r.labs().await?,
        };
        let mut statuses = Vec::new();
        for n in &names {
            match r.status(n).await? {
                Some(s) => statuses.push(s),
                None if lab.is_some() => anyhow::bail!("no status for lab `{n}`: is it in labd's labs directory, and is labd running?"),
                None => {}
            }
        }
        let stale = staleness(&mut r).await;
        let text = match output {
            Output::Table if statuses.is_empty() => "no labs (is labd running?)".to_string(),
            Output::Table => {
                let table = status_table(&statuses, stale.is_some());
                match &stale {
                    Some(why) => format!("{why}\n{table}"),
                    None => table,
                }
            }
            Output::Json if lab.is_some() => serde_json::to_string_pretty(&statuses[0])?,
            Output::Json => serde_json::to_string_pretty(&statuses)?,
            Output::Yaml if lab.is_some() => serde_yaml_ng::to_string(&statuses[0])?,
            Output::Yaml => serde_yaml_ng::to_string(&statuses)?,
        };
        if !watch {
            if let (Some(why), false) = (&stale, matches!(output, Output::Table)) {
                eprintln!("{why}");
            }
            println!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        print!("\x1b[2J\x1b[H{text}\n");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}


/// Why the statuses may be stale: the leading labd has not said it is alive for three resync
/// periods (at least 15 s), or never did.
async fn staleness(r: &mut swarmlab::store::StoreReader) -> Option<String> {
    match r.heartbeat().await {
        Ok(Some((at, resync))) => {
            let age = (chrono::Utc::now() - at).to_std().unwrap_or_default();
            let limit = (resync * 3).max(std::time::Duration::from_secs(15));
            (age > limit).then(|| {
                format!(
                    "STALE: labd was last seen {} ({}s ago); these statuses are what it saw then (is labd running and leading? `labctl` reads Redis only)",
                    at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
                    age.as_secs()
                )
            })
        }
        Ok(None) => Some("STALE: no labd has written here yet (is labd running against this Redis?)".to_string()),
        Err(_) => None,
    }
}
