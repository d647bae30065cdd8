//! `labctl events [LAB] [-w] [--types Warning] [-n 50] [-o json]`: what labd did and saw, as
//! `kubectl events` and `flux events` show it; all labs' merged in time order without LAB.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use swarmlab::status::{EventKind, LabEvent};
use swarmlab::store::StoreReader;

use crate::common::*;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    /// One JSON object per line (with `--watch` too): `{"lab", "time", "type", "reason", "message"}`.
    Json,
}

pub struct Args {
    pub lab: Option<String>,
    pub watch: bool,
    pub types: Vec<EventKind>,
    pub tail: usize,
    pub format: Format,
}

/// How long one wait for new events lasts before the list of labs is read again (a lab that
/// appears meanwhile is followed from its first event).
const WATCH_BLOCK: Duration = Duration::from_secs(2);

pub async fn run(url: &str, args: Args) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    let labs = labs(&mut r, args.lab.as_deref()).await?;
    // Each lab's recent events, merged: from where each lab's stream was, a watch reads on.
    let mut after: BTreeMap<String, String> = BTreeMap::new();
    let mut recent = Vec::new();
    for lab in &labs {
        // One more than shown, at least: a watch reads on from the last one (`-n 0` too).
        let mut events = r.recent_events(lab, args.tail.max(1)).await?;
        after.insert(lab.clone(), events.last().map_or_else(|| "0-0".to_string(), |(id, _)| id.clone()));
        events.drain(..events.len().saturating_sub(args.tail));
        recent.extend(events.into_iter().map(|(_, e)| (lab.clone(), e)));
    }
    recent.sort_by_key(|(_, e)| e.time);
    let shown: Vec<(String, LabEvent)> = recent.into_iter().filter(|(_, e)| wanted(&args.types, e)).collect();
    let all_labs = args.lab.is_none();
    if matches!(args.format, Format::Table) {
        if shown.is_empty() && !args.watch {
            eprintln!("no events (labd writes a lab's events as it acts on it; is labd running?)");
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}", header(all_labs));
    }
    for (lab, e) in &shown {
        println!("{}", line(args.format, all_labs, lab, e));
    }
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let mut waiter = StoreReader::connect_for_waiting(url, WATCH_BLOCK).await?;
    loop {
        let read = follow(&mut waiter, &mut r, &mut after, all_labs).await;
        match read {
            Ok(events) => {
                for (lab, e) in events.into_iter().filter(|(_, e)| wanted(&args.types, e)) {
                    println!("{}", line(args.format, all_labs, &lab, &e));
                }
            }
            // Redis restarted (or the network blinked): a watch goes on from where it was, as
            // the streams keep their ids.
            Err(e) => {
                eprintln!("labctl events: lost redis at {url} ({e}); reconnecting");
                (waiter, r) = reconnect(url).await;
                eprintln!("labctl events: reconnected to {url}");
            }
        }
    }
}

/// The labs that appeared meanwhile, and the events after `after` (moved on past them only once
/// read whole: a failed read leaves `after` where it was, so nothing is skipped).
async fn follow(waiter: &mut StoreReader, r: &mut StoreReader, after: &mut BTreeMap<String, String>, all_labs: bool) -> redis::RedisResult<Vec<(String, LabEvent)>> {
    if all_labs {
        for lab in r.labs().await? {
            after.entry(lab).or_insert_with(|| "0-0".to_string());
        }
    }
    let mut out = Vec::new();
    for (lab, id, e) in waiter.events_after(after, WATCH_BLOCK).await? {
        after.insert(lab.clone(), id);
        out.push((lab, e));
    }
    Ok(out)
}

/// Both connections again, trying every second until Redis answers.
async fn reconnect(url: &str) -> (StoreReader, StoreReader) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let (Ok(waiter), Ok(r)) = (StoreReader::connect_for_waiting(url, WATCH_BLOCK).await, StoreReader::connect(url).await) {
            return (waiter, r);
        }
    }
}

async fn labs(r: &mut StoreReader, lab: Option<&str>) -> anyhow::Result<Vec<String>> {
    let known = r.labs().await?;
    match lab {
        None => Ok(known),
        Some(l) if known.iter().any(|k| k == l) || !r.recent_events(l, 1).await?.is_empty() => Ok(vec![l.to_string()]),
        Some(l) => Err(no_such_lab(r, l, "events").await),
    }
}

fn wanted(types: &[EventKind], e: &LabEvent) -> bool {
    types.is_empty() || types.contains(&e.kind)
}

fn header(all_labs: bool) -> String {
    if all_labs {
        format!("{:<12}  {:<16}  {:<7}  {:<24}  MESSAGE", "TIME", "LAB", "TYPE", "REASON")
    } else {
        format!("{:<12}  {:<7}  {:<24}  MESSAGE", "TIME", "TYPE", "REASON")
    }
}

/// One event: a row under `header` (columns padded, not measured: a watch prints rows as they
/// come), or a JSON line.
fn line(format: Format, all_labs: bool, lab: &str, e: &LabEvent) -> String {
    match format {
        Format::Json => serde_json::json!({"lab": lab, "time": e.time, "type": e.kind.to_string(), "reason": e.reason.to_string(), "message": e.message}).to_string(),
        Format::Table => {
            let time = e.time.format("%H:%M:%S%.3f");
            let (kind, reason) = (e.kind.to_string(), e.reason.to_string());
            if all_labs {
                format!("{time:<12}  {lab:<16}  {kind:<7}  {reason:<24}  {}", e.message)
            } else {
                format!("{time:<12}  {kind:<7}  {reason:<24}  {}", e.message)
            }
        }
    }
}

/// `--types warning,Normal`: kubectl's names, any case.
pub fn parse_kind(text: &str) -> Result<EventKind, String> {
    match text.to_ascii_lowercase().as_str() {
        "normal" => Ok(EventKind::Normal),
        "warning" => Ok(EventKind::Warning),
        _ => Err(format!("`{text}` is not an event type: Normal or Warning")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmlab::status::EventReason;

    #[test]
    fn a_row_lines_up_under_its_header_and_a_json_line_is_one_object() {
        let mut e = LabEvent::now(EventReason::DriftRepaired, "put back 1 service changed outside labd");
        e.time = chrono::DateTime::parse_from_rfc3339("2026-12-05T17:04:05.25Z").expect("a time").with_timezone(&chrono::Utc);
        let row = line(Format::Table, true, "kv", &e);
        assert_eq!(row, "17:04:05.250  kv                Warning  DriftRepaired             put back 1 service changed outside labd");
        assert_eq!(row.find("Warning"), header(true).find("TYPE"));
        assert_eq!(row.find("put back"), header(true).find("MESSAGE"));
        assert_eq!(line(Format::Table, false, "kv", &e).find("DriftRepaired"), header(false).find("REASON"));
        let json: serde_json::Value = serde_json::from_str(&line(Format::Json, false, "kv", &e)).expect("json");
        assert_eq!(json, serde_json::json!({"lab": "kv", "time": "2026-12-05T17:04:05.250Z", "type": "Warning", "reason": "DriftRepaired", "message": "put back 1 service changed outside labd"}));
        assert!(wanted(&[EventKind::Warning], &e) && !wanted(&[EventKind::Normal], &e) && wanted(&[], &e));
        assert_eq!(parse_kind("warning"), Ok(EventKind::Warning));
        assert!(parse_kind("Error").is_err());
    }
}
