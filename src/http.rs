//! labd's read-only HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers), `/readyz` (it has a role: leading, or standing by for the lease), and a live page
//! of every lab at `/` (with its data at `/api/labs`). hyper
//! directly, already in the tree through bollard: three fixed routes need no framework.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the page shows of each lab: its last good definition and its status, as the leading
/// controller last saw them.
#[derive(Debug, Clone, Default)]
pub struct LabView {
    pub lab: Option<crate::spec::Lab>,
    pub status: crate::status::LabStatus,
}

pub type LabsView = tokio::sync::watch::Receiver<std::collections::BTreeMap<String, LabView>>;

/// The live page: a small script asks for `/api/labs` every second and draws what it gets (the
/// SVG is made here, by the same code as `labctl graph`): no framework, no build step.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>swarmlab</title>
<style>body{font-family:sans-serif;margin:1.5em} section{border:1px solid #ccc;border-radius:6px;padding:0 1em;margin:1em 0} .Ready{color:#2a7a2a} .Degraded,.Failed,.Invalid{color:#b02020} .Progressing,.Pending,.Suspended,.Orphaned,.Deleting{color:#a07000}</style>
</head><body>
<h1>swarmlab</h1>
<p id="updated">loading…</p>
<div id="labs"></div>
<h2>Recent events</h2>
<table id="events"><tr><td>loading…</td></tr></table>
<script>
async function refresh() {
  try {
    const labs = await (await fetch('/api/labs')).json();
    document.getElementById('labs').innerHTML = labs.length ? labs.map(l =>
      `<section class="lab" data-lab="${l.name}" data-phase="${l.phase}"><h2>${l.name} — <span class="${l.phase}">${l.phase}</span></h2><p>${l.message}</p>${l.svg}</section>`).join('') : '<p>no labs</p>';
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    const events = await (await fetch('/api/events')).json();
    document.getElementById('events').innerHTML = '<tr><th>time</th><th>lab</th><th>reason</th><th>message</th></tr>' +
      events.map(e => `<tr class="event"><td>${e.time}</td><td>${e.lab}</td><td>${e.reason}</td><td>${e.message}</td></tr>`).join('');
  } catch (e) {
    document.getElementById('updated').textContent = 'labd unreachable: ' + e;
  }
}
refresh();
setInterval(refresh, 1000);
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

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The newest events of every lab on the page, newest first, read from Redis.
async fn events_json(view: &LabsView, reader: &tokio::sync::Mutex<Option<crate::store::StoreReader>>, redis_url: &str) -> String {
    let labs: Vec<String> = view.borrow().keys().cloned().collect();
    let mut slot = reader.lock().await;
    if slot.is_none() {
        *slot = crate::store::StoreReader::connect(redis_url).await.ok();
    }
    let Some(r) = slot.as_mut() else { return "[]".into() };
    let mut all = Vec::new();
    for lab in labs {
        match r.events(&lab, 10).await {
            Ok(events) => all.extend(events.into_iter().map(|e| (lab.clone(), e))),
            Err(_) => {
                *slot = None;
                return "[]".into();
            }
        }
    }
    all.sort_by(|a, b| b.1.time.cmp(&a.1.time));
    let rows: Vec<serde_json::Value> = all
        .into_iter()
        .take(20)
        .map(|(lab, e)| serde_json::json!({"time": e.time.format("%H:%M:%S").to_string(), "lab": lab, "reason": e.reason.to_string(), "message": escape(&e.message)}))
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}

fn route(path: &str, metrics: &Metrics, role: Role, view: Option<&LabsView>) -> Response<Full<Bytes>> {
    match path {
        "/" if view.is_some() => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        "/api/labs" => match view {
            Some(v) => reply(StatusCode::OK, "application/json", labs_json(v)),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "no labs here: this is a node agent\n".into()),
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
    role: tokio::sync::watch::Receiver<Role>,
    view: Option<LabsView>,
    redis_url: Option<String>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let reader = Arc::new(tokio::sync::Mutex::new(None));
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            let role = role.clone();
            let view = view.clone();
            let reader = reader.clone();
            let redis_url = redis_url.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    let response = route(&path, &metrics, *role.borrow(), view.as_ref());
                    let (view, reader, redis_url) = (view.clone(), reader.clone(), redis_url.clone());
                    async move {
                        if let ("/api/events", Some(view), Some(url)) = (path.as_str(), view, redis_url) {
                            return Ok::<_, Infallible>(reply(StatusCode::OK, "application/json", events_json(&view, &reader, &url).await));
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }))
}
