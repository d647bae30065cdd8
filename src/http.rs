//! labd's read-only HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers), `/readyz` (it has a role: leading, or standing by for the lease), and a live page
//! of every lab at `/` (its data at `/api/labs`, `/api/events` and `/api/usage`, pushed as
//! server-sent events at `/api/stream`). hyper
//! directly, already in the tree through bollard: three fixed routes need no framework.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What the page shows of each lab: its last good definition and its status, as the leading
/// controller last saw them.
#[derive(Debug, Clone, Default)]
pub struct LabView {
    pub lab: Option<std::sync::Arc<crate::spec::Lab>>,
    pub status: crate::status::LabStatus,
}

pub type LabsView = watch::Receiver<std::collections::BTreeMap<String, LabView>>;

/// The live page: a small script draws what `/api/stream` pushes (the SVG is made here, by the
/// same code as `labctl graph`): no framework, no build step.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>swarmlab</title>
<style>body{font-family:sans-serif;margin:1.5em} section{border:1px solid #ccc;border-radius:6px;padding:0 1em;margin:1em 0} .Ready{color:#2a7a2a} .Completed{color:#2a5a9a} .Degraded,.Failed,.Invalid{color:#b02020} .Progressing,.Pending,.Suspended,.Orphaned,.Deleting{color:#a07000} table{border-collapse:collapse;margin-bottom:1em} th,td{padding:2px 14px 2px 0;text-align:left} th{font-weight:600}</style>
</head><body>
<h1>swarmlab</h1>
<p id="updated">loading…</p>
<div id="labs"></div>
<h2>Recent events</h2>
<table id="events"><tr><td>loading…</td></tr></table>
<script>
// Pushed by labd (server-sent events): `labs` whenever a lab changes, `events` when the Redis
// events stream of a lab grows, `usage` when the agents' samples change. EventSource
// reconnects by itself if labd goes away.
let usage = {};
function drawLabs(labs) {
  document.getElementById('labs').innerHTML = labs.length ? labs.map(l =>
    `<section class="lab" data-lab="${l.name}" data-phase="${l.phase}"><h2>${l.name} — <span class="${l.phase}">${l.phase}</span></h2><p>${l.message}</p>${l.svg}<table class="usage"></table></section>`).join('') : '<p>no labs</p>';
  document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  drawUsage();
}
function drawUsage() {
  for (const section of document.querySelectorAll('section.lab')) {
    const rows = usage[section.dataset.lab] || [];
    section.querySelector('table.usage').innerHTML = rows.length ? '<tr><th>service</th><th>tasks</th><th>CPU</th><th>memory</th><th>traffic (received / sent per second)</th></tr>' +
      rows.map(r => `<tr class="usage" data-service="${r.service}"><td>${r.service}</td><td>${r.tasks}</td><td>${r.cpu}</td><td>${r.memory}</td><td>${r.traffic}</td></tr>`).join('') : '';
    // Each attachment's edge: what its service received (↓) and sent (↑) there, per second.
    for (const t of section.querySelectorAll('g.attachment text.traffic')) {
      const g = t.parentNode, row = rows.find(r => r.service === g.dataset.service);
      t.textContent = (row && row.edges && row.edges[g.dataset.network]) || '';
    }
  }
}
function drawEvents(events) {
  document.getElementById('events').innerHTML = '<tr><th>time</th><th>lab</th><th>reason</th><th>message</th></tr>' +
    events.map(e => `<tr class="event"><td>${e.time}</td><td>${e.lab}</td><td>${e.reason}</td><td>${e.message}</td></tr>`).join('');
}
const stream = new EventSource('/api/stream');
stream.addEventListener('labs', m => drawLabs(JSON.parse(m.data)));
stream.addEventListener('events', m => drawEvents(JSON.parse(m.data)));
stream.addEventListener('usage', m => { usage = JSON.parse(m.data); drawUsage(); });
stream.onerror = () => { document.getElementById('updated').textContent = 'labd unreachable; reconnecting…'; };
</script>
</body></html>
"#;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn labs_json(view: &LabsView) -> String {
    let labs: Vec<serde_json::Value> = view
        .borrow()
        .iter()
        .map(|(name, v)| {
            let svg = v.lab.as_ref().map(|l| crate::graph::Topology::of(l, Some(&v.status)).svg()).unwrap_or_default();
            serde_json::json!({"name": name, "phase": v.status.phase.to_string(), "message": escape(&v.status.message), "svg": svg})
        })
        .collect();
    serde_json::to_string(&labs).unwrap_or_else(|_| "[]".into())
}

/// What `/readyz` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Starting,
    Leading,
    StandingBy,
    /// `labd agent`: shaping this node's tasks.
    Agent,
}

/// Every response: a whole body, or the page's endless stream.
type Body = BoxBody<Bytes, Infallible>;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The newest events of every lab on the page, newest first, as the page's JSON.
async fn events_json(labs: &[String], reader: &mut crate::store::StoreReader) -> redis::RedisResult<String> {
    let mut all = Vec::new();
    for lab in labs {
        all.extend(reader.events(lab, 10).await?.into_iter().map(|e| (lab.clone(), e)));
    }
    all.sort_by_key(|e| std::cmp::Reverse(e.1.time));
    let rows: Vec<serde_json::Value> = all
        .into_iter()
        .take(20)
        .map(|(lab, e)| serde_json::json!({"time": e.time.format("%H:%M:%S").to_string(), "lab": lab, "reason": e.reason.to_string(), "message": escape(&e.message)}))
        .collect();
    Ok(serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into()))
}

/// How long one `XREAD BLOCK` waits before the lab list is looked at again.
const EVENTS_BLOCK: Duration = Duration::from_secs(2);
/// A comment line this often keeps proxies and browsers from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Keeps `feed` at the page's events JSON: read again whenever a lab's Redis events stream
/// grows (one blocking `XREAD` for the whole endpoint, whatever the number of pages open), or
/// the lab list changes. Redis away: the last JSON stays, and the feed reconnects.
async fn feed_events(view: LabsView, redis_url: String, feed: watch::Sender<String>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let (reader, waiter) = tokio::join!(
            crate::store::StoreReader::connect(&redis_url),
            crate::store::StoreReader::connect_for_waiting(&redis_url, EVENTS_BLOCK)
        );
        let (Ok(mut reader), Ok(mut waiter)) = (reader, waiter) else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        };
        backoff = Duration::from_millis(250);
        loop {
            let labs: Vec<String> = view.borrow().keys().cloned().collect();
            match events_json(&labs, &mut reader).await {
                Ok(json) => {
                    feed.send_if_modified(|old| if *old != json { *old = json; true } else { false });
                }
                Err(_) => break,
            }
            // An event written between the read above and this wait is seen at the next
            // round, at most EVENTS_BLOCK later.
            if waiter.wait_for_events(&labs, EVENTS_BLOCK).await.is_err() {
                break;
            }
            if feed.is_closed() {
                return;
            }
        }
    }
}

/// What the page shows of what each lab's services use: per lab, a row per service (the sum
/// of its tasks' last samples on every node), the figures formatted as `labctl top`'s.
async fn usage_json(labs: &[String], reader: &mut crate::store::StoreReader) -> redis::RedisResult<String> {
    use crate::usage::{binary_bytes, by_service, decimal_bytes};
    let mut out = serde_json::Map::new();
    for lab in labs {
        let tasks = reader.task_usage(lab).await?;
        let (Some(_), services) = by_service(tasks.iter()) else { continue };
        let rows: Vec<serde_json::Value> = services
            .iter()
            .map(|(service, u)| {
                let traffic: Vec<String> = u.networks.iter().map(|(net, [rx, tx])| format!("{}: {}/s / {}/s", escape(net), decimal_bytes(*rx), decimal_bytes(*tx))).collect();
                // For the drawing: each attachment's edge carries its service's traffic there.
                let edges: serde_json::Map<String, serde_json::Value> =
                    u.networks.iter().map(|(net, [rx, tx])| (escape(net), serde_json::json!(format!("↓ {}/s  ↑ {}/s", decimal_bytes(*rx), decimal_bytes(*tx))))).collect();
                serde_json::json!({"service": escape(service), "tasks": u.tasks, "cpu": format!("{:.1}%", u.cpu_cores * 100.0), "memory": binary_bytes(u.memory_bytes), "traffic": traffic.join(", "), "edges": edges})
            })
            .collect();
        out.insert(lab.clone(), serde_json::Value::Array(rows));
    }
    Ok(serde_json::Value::Object(out).to_string())
}

/// How often the page's usage is read again (the agents sample every few seconds).
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// Keeps `feed` at the page's usage JSON, read every `USAGE_EVERY`. Redis away: the last JSON
/// stays, and the feed reconnects.
async fn feed_usage(view: LabsView, redis_url: String, feed: watch::Sender<String>) {
    let mut reader = None;
    let mut tick = tokio::time::interval(USAGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !feed.is_closed() {
        tick.tick().await;
        if reader.is_none() {
            reader = crate::store::StoreReader::connect(&redis_url).await.ok();
        }
        let Some(r) = reader.as_mut() else { continue };
        let labs: Vec<String> = view.borrow().keys().cloned().collect();
        match usage_json(&labs, r).await {
            Ok(json) => {
                feed.send_if_modified(|old| if *old != json { *old = json; true } else { false });
            }
            Err(_) => reader = None,
        }
    }
}

fn sse(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// What the page's stream carries besides the labs, each kept current by its feed.
#[derive(Clone)]
struct Feeds {
    events: watch::Receiver<String>,
    usage: watch::Receiver<String>,
}

/// The page's stream: the labs, the events and the usage at once, then each change of any.
fn stream_of(mut labs: LabsView, feeds: Feeds) -> Body {
    let Feeds { mut events, mut usage } = feeds;
    labs.mark_unchanged();
    let last_labs = labs_json(&labs);
    let first = [sse("labs", &last_labs), sse("events", &events.borrow_and_update()), sse("usage", &usage.borrow_and_update())];
    let changes = futures::stream::unfold((labs, events, usage, last_labs), |(mut labs, mut events, mut usage, mut last_labs)| async move {
        loop {
            let chunk = tokio::select! {
                changed = labs.changed() => {
                    changed.ok()?;
                    // Reconciles republish the view often; send only what the page would change.
                    let json = labs_json(&labs);
                    if json == last_labs {
                        continue;
                    }
                    last_labs = json;
                    sse("labs", &last_labs)
                }
                changed = events.changed() => {
                    changed.ok()?;
                    let json = events.borrow_and_update().clone();
                    sse("events", &json)
                }
                changed = usage.changed() => {
                    changed.ok()?;
                    let json = usage.borrow_and_update().clone();
                    sse("usage", &json)
                }
                _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
            };
            return Some((chunk, (labs, events, usage, last_labs)));
        }
    });
    let frames = futures::stream::iter(first).chain(changes).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(frames))
}

fn route(path: &str, metrics: &Metrics, role: Role, view: Option<&LabsView>, feeds: Option<&Feeds>) -> Response<Body> {
    match path {
        "/" if view.is_some() => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        "/api/labs" => match view {
            Some(v) => reply(StatusCode::OK, "application/json", labs_json(v)),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "no labs here: this is a node agent\n".into()),
        },
        "/api/events" => match feeds {
            Some(f) => reply(StatusCode::OK, "application/json", f.events.borrow().clone()),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "no events here: this is a node agent\n".into()),
        },
        "/api/usage" => match feeds {
            Some(f) => reply(StatusCode::OK, "application/json", f.usage.borrow().clone()),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "no labs here: this is a node agent (`labctl top` reads every node's)\n".into()),
        },
        "/api/stream" => match (view, feeds) {
            (Some(v), Some(f)) => {
                let mut r = Response::new(stream_of(v.clone(), f.clone()));
                let headers = r.headers_mut();
                headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
                headers.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-cache"));
                r
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "no labs here: this is a node agent\n".into()),
        },
        "/metrics" => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode()),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match role {
            Role::Leading => reply(StatusCode::OK, "text/plain", "leading\n".into()),
            Role::StandingBy => reply(StatusCode::OK, "text/plain", "standing by for the leader lease\n".into()),
            Role::Agent => reply(StatusCode::OK, "text/plain", "node agent running\n".into()),
            Role::Starting => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n".into()),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".into()),
    }
}

/// Where `POST /hooks/git` finds the secret it checks, and the Redis it asks labd through.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub secret_file: std::path::PathBuf,
    pub redis_url: String,
}

/// A Git host's push: checked against the secret (read at each request, so a rotated one
/// counts at once), then labd is asked to fetch now, as `labctl reconcile` asks it.
async fn git_hook(req: Request<hyper::body::Incoming>, hook: &Webhook) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, crate::webhook::MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("a body of at most {} bytes\n", crate::webhook::MAX_BODY)),
    };
    let secret = match crate::webhook::read_secret(&hook.secret_file) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(file = %hook.secret_file.display(), error = %e, "webhook refused: its secret cannot be read");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "labd cannot read its webhook secret (its log says why)\n".into());
        }
    };
    if let Err(why) = crate::webhook::authorize(&parts.headers, &body, &secret) {
        tracing::warn!(reason = %why, "webhook refused");
        return reply(StatusCode::UNAUTHORIZED, "text/plain", format!("{why}\n"));
    }
    if crate::webhook::is_ping(&parts.headers) {
        return reply(StatusCode::OK, "text/plain", "pong: pushes will be fetched at once\n".into());
    }
    let asked = async {
        let mut store = crate::store::StoreReader::connect(&hook.redis_url).await?;
        store.request_reconcile(None).await
    };
    match asked.await {
        Ok((id, heard)) if heard > 0 => {
            tracing::info!(request = %id, "webhook: the branch is fetched now");
            reply(StatusCode::ACCEPTED, "text/plain", format!("fetch requested (request {id})\n"))
        }
        Ok(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no labd leads now: the leader fetches the branch when it starts\n".into()),
        Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("redis cannot be reached: {e}\n")),
    }
}

/// Binds `addr` (an error if it cannot), then serves until the task is dropped.
/// `view` and `redis_url`: the labs and their events for the page (labd; not `labd agent`);
/// `webhook`: `POST /hooks/git` is served.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    role: watch::Receiver<Role>,
    view: Option<LabsView>,
    redis_url: Option<String>,
    webhook: Option<Webhook>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let feeds = match (&view, redis_url) {
        (Some(view), Some(url)) => {
            let (feed, events) = watch::channel("[]".to_string());
            tokio::spawn(feed_events(view.clone(), url.clone(), feed));
            let (feed, usage) = watch::channel("{}".to_string());
            tokio::spawn(feed_usage(view.clone(), url, feed));
            Some(Feeds { events, usage })
        }
        _ => None,
    };
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (metrics, role, view, feeds, webhook) = (metrics.clone(), role.clone(), view.clone(), feeds.clone(), webhook.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    use futures::FutureExt;
                    let response = match webhook.clone().filter(|_| req.method() == hyper::Method::POST && req.uri().path() == crate::webhook::PATH) {
                        Some(hook) => async move { git_hook(req, &hook).await }.boxed(),
                        // The other routes answer at once, from what is at hand.
                        None => futures::future::ready(route(req.uri().path(), &metrics, *role.borrow(), view.as_ref(), feeds.as_ref())).boxed(),
                    };
                    response.map(Ok::<_, Infallible>)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }))
}
