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
        let text = match output {
            Output::Table if statuses.is_empty() => "no labs (is labd running?)".to_string(),
            Output::Table => status_table(&statuses),
            Output::Json if lab.is_some() => serde_json::to_string_pretty(&statuses[0])?,
            Output::Json => serde_json::to_string_pretty(&statuses)?,
            Output::Yaml if lab.is_some() => serde_yaml_ng::to_string(&statuses[0])?,
            Output::Yaml => serde_yaml_ng::to_string(&statuses)?,
        };
        if !watch {
            println!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        print!("\x1b[2J\x1b[H{text}\n");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

