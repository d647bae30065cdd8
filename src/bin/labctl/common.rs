//! What several subcommands share: the Redis reader and the cells of the status table.

use comfy_table::{presets::NOTHING, Table};
use swarmlab::status::LabStatus;
use swarmlab::store::StoreReader;

/// The schedule's steps (and `labctl restart`s) among the lab's events after `after` (best
/// effort: without Redis, or with no schedule, none), oldest first: what `logs` and `capture`
/// mark among what they show.
pub async fn schedule_steps(store: Option<&mut StoreReader>, lab: &str, after: Option<chrono::DateTime<chrono::Utc>>) -> Vec<swarmlab::status::LabEvent> {
    use swarmlab::status::EventReason;
    let Some(r) = store else { return vec![] };
    let mut events = r.events(lab, 200).await.unwrap_or_default();
    events.retain(|e| matches!(e.reason, EventReason::Step | EventReason::StepApplied | EventReason::ScheduleFinished | EventReason::Restarted) && after.is_none_or(|t| e.time > t));
    events.sort_by_key(|e| e.time);
    events
}

/// A step's mark among lines: `=== 01:02:03.456 step 2/3 (run 1): …` (UTC, as labctl's times).
pub fn step_mark(event: &swarmlab::status::LabEvent) -> String {
    format!("=== {} {}", event.time.format("%H:%M:%S%.3f"), event.message)
}

/// Prints `screen` once, or with `watch` every 2 s on a cleared terminal, as `watch(1)` does. A
/// Redis that goes away meanwhile (restarted, the network blinking) is said on the screen and
/// waited for; any other error ends it.
pub async fn once_or_watched(url: &str, watch: bool, mut screen: impl AsyncFnMut(&mut StoreReader) -> anyhow::Result<String>) -> anyhow::Result<std::process::ExitCode> {
    let mut r = reader(url).await?;
    if !watch {
        println!("{}", screen(&mut r).await?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    loop {
        match screen(&mut r).await {
            Ok(text) => println!("\x1b[2J\x1b[H{text}"),
            Err(e) if e.downcast_ref::<redis::RedisError>().is_some() => {
                println!("\x1b[2J\x1b[Hcannot reach redis at {url} ({e}); trying again every 2 s");
                if let Ok(again) = StoreReader::connect(url).await {
                    r = again;
                    continue;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

pub async fn reader(url: &str) -> anyhow::Result<StoreReader> {
    StoreReader::connect(url).await.map_err(|e| {
        // Settings that cannot work (a client certificate's files) say so themselves.
        if e.kind() == redis::ErrorKind::InvalidClientConfig {
            return anyhow::Error::new(e).context(format!("redis at {url}"));
        }
        let what_to_do = swarmlab::store::tls_hint(url.starts_with("rediss://"), &e).unwrap_or("is labd's redis running? (set --redis or REDIS_URL)");
        anyhow::Error::new(e).context(format!("cannot reach redis at {url}: {what_to_do}"))
    })
}

/// The error for a lab labd reports no status of, saying which labs it does report, and which
/// lab a file of that name defines (`labctl describe dockercoins` when dockercoins.yaml
/// defines the lab `coins`: labs are named by their `metadata.name`, as in kubectl).
pub async fn no_such_lab(r: &mut StoreReader, lab: &str, verb: &str) -> anyhow::Error {
    let mut known = Vec::new();
    let mut in_file = None;
    for name in r.labs().await.unwrap_or_default() {
        if let Ok(Some(s)) = r.status(&name).await {
            if std::path::Path::new(&s.source).file_stem().is_some_and(|stem| stem == lab) {
                in_file = Some((s.source.clone(), name.clone()));
            }
        }
        known.push(name);
    }
    match in_file {
        Some((file, name)) => anyhow::anyhow!("no lab `{lab}`, but {file} defines the lab `{name}` (a lab is named by its metadata.name): `labctl {verb} {name}`"),
        None if known.is_empty() => anyhow::anyhow!("no lab `{lab}`: labd reports no lab at all; is labd running, and is the lab's file in its labs directory?"),
        None => {
            let shown = known.iter().take(10).map(String::as_str).collect::<Vec<_>>().join(", ");
            let more = if known.len() > 10 { format!(" and {} more", known.len() - 10) } else { String::new() };
            anyhow::anyhow!("no lab `{lab}` (labd reports {shown}{more}); is its file in labd's labs directory? `labctl validate FILE` says what is wrong with a file")
        }
    }
}

pub fn age(status: &LabStatus) -> String {
    status.created_at.map_or_else(|| "-".into(), since)
}

/// How long ago `t` was, as kubectl says it: `45s`, `12m`, `3h`, `2d`.
pub fn since(t: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - t).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub fn shaping_cell(s: &LabStatus) -> String {
    match s.condition(swarmlab::status::condition_types::SHAPING_APPLIED) {
        None => "-".into(),
        Some(c) if c.message == "no conditions" => "-".into(),
        Some(c) if c.status == swarmlab::status::ConditionStatus::True => c.message.split(" tasks shaped").next().map(|n| format!("{n} tasks")).unwrap_or_default(),
        Some(c) => c.reason.clone(),
    }
}

/// Where the lab's schedule is: `3/7`, with the run when it repeats and `done` at its end.
pub fn step_cell(s: &LabStatus) -> String {
    match &s.schedule {
        None => "-".into(),
        Some(c) if c.started_at.is_none() => format!("0/{} waiting", c.steps),
        Some(c) if c.finished => format!("{}/{} done", c.step, c.steps),
        Some(c) if c.run > 1 => format!("{}/{} run {}", c.step, c.steps, c.run),
        Some(c) => format!("{}/{}", c.step, c.steps),
    }
}

pub fn status_table(statuses: &[LabStatus], stale: bool) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["NAME", "PHASE", "READY", "SHAPING", "STEP", "REVISION", "AGE", "MESSAGE"]);
    for s in statuses {
        let (ready, total) = s.ready_services();
        let mut message = s.message.clone();
        if let Some(b) = &s.backoff {
            message = format!("{message} (retry {} at {})", b.attempt, b.next_try.format("%H:%M:%S"));
        }
        t.add_row([
            s.name.clone(),
            if stale { format!("{} (stale)", s.phase) } else { s.phase.to_string() },
            format!("{ready}/{total}"),
            shaping_cell(s),
            step_cell(s),
            // From Git, the commit is what people know their labs by (as `flux get`).
            match &s.commit {
                Some(commit) => commit.chars().take(7).collect(),
                None => s.revision.chars().take(8).collect(),
            },
            age(s),
            message,
        ]);
    }
    t.trim_fmt()
}

