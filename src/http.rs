//! labd's read-only HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers), `/readyz` (it has a role: leading, or standing by for the lease), and a live page
//! of every lab at `/` (its data at `/api/labs` and `/api/events`, pushed as server-sent events
//! at `/api/stream`). hyper
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
<style>body{font-family:sans-serif;margin:1.5em} section{border:1px solid #ccc;border-radius:6px;padding:0 1em;margin:1em 0} .Ready{color:#2a7a2a} .Completed{color:#2a5a9a} .Degraded,.Failed,.Invalid{color:#b02020} .Progressing,.Pending,.Suspended,.Orphaned,.Deleting{color:#a07000}</style>
</head><body>
<h1>swarmlab</h1>
<p id="updated">loading…</p>
<div id="labs"></div>
<h2>Recent events</h2>
<table id="events"><tr><td>loading…</td></tr></table>
<script>
// Pushed by labd (server-sent events): `labs` whenever a lab changes, `events` when the Redis
// events stream of a lab grows. EventSource reconnects by itself if labd goes away.
function drawLabs(labs) {
  document.getElementById('labs').innerHTML = labs.length ? labs.map(l =>
    `<section class="lab" data-lab="${l.name}" data-phase="${l.phase}"><h2>${l.name} — <span class="${l.phase}">${l.phase}</span></h2><p>${l.message}</p>${l.svg}</section>`).join('') : '<p>no labs</p>';
  document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
}
function drawEvents(events) {
  document.getElementById('events').innerHTML = '<tr><th>time</th><th>lab</th><th>reason</th><th>message</th></tr>' +
    events.map(e => `<tr class="event"><td>${e.time}</td><td>${e.lab}</td><td>${e.reason}</td><td>${e.message}</td></tr>`).join('');
}
const stream = new EventSource('/api/stream');
stream.addEventListener('labs', m => drawLabs(JSON.parse(m.data)));
stream.addEventListener('events', m => drawEvents(JSON.parse(m.data)));
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

fn sse(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The page's stream: the labs and the events at once, then each change of either.
fn stream_of(mut labs: LabsView, mut events: watch::Receiver<String>) -> Body {
    labs.mark_unchanged();
    let last_labs = labs_json(&labs);
    let first = [sse("labs", &last_labs), sse("events", &events.borrow_and_update())];
    let changes = futures::stream::unfold((labs, events, last_labs), |(mut labs, mut events, mut last_labs)| async move {
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
                _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
            };
            return Some((chunk, (labs, events, last_labs)));
        }
    });
    let frames = futures::stream::iter(first).chain(changes).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(frames))
}

fn route(path: &str, metrics: &Metrics, role: Role, view: Option<&LabsView>, events: Option<&watch::Receiver<String>>) -> Response<Body> {
    match path {
        "/" if view.is_some() => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        "/api/labs" => match view {
            Some(v) => reply(StatusCode::OK, "application/json", labs_json(v)),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "no labs here: this is a node agent\n".into()),
        },
        "/api/events" => match events {
            Some(e) => reply(StatusCode::OK, "application/json", e.borrow().clone()),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "no events here: this is a node agent\n".into()),
        },
        "/api/stream" => match (view, events) {
            (Some(v), Some(e)) => {
                let mut r = Response::new(stream_of(v.clone(), e.clone()));
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

/// Binds `addr` (an error if it cannot), then serves until the task is dropped.
/// `view` and `redis_url`: the labs and their events for the page (labd; not `labd agent`).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    role: watch::Receiver<Role>,
    view: Option<LabsView>,
    redis_url: Option<String>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let events = match (&view, redis_url) {
        (Some(view), Some(url)) => {
            let (feed, events) = watch::channel("[]".to_string());
            tokio::spawn(feed_events(view.clone(), url, feed));
            Some(events)
        }
        _ => None,
    };
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (metrics, role, view, events) = (metrics.clone(), role.clone(), view.clone(), events.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let response = route(req.uri().path(), &metrics, *role.borrow(), view.as_ref(), events.as_ref());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }))
}
