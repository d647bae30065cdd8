//! labd's read-only HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers) and `/readyz` (it has a role: leading, or standing by for the lease). hyper
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

fn route(path: &str, metrics: &Metrics, role: Role) -> Response<Full<Bytes>> {
    match path {
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
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, role: tokio::sync::watch::Receiver<Role>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            let role = role.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let response = route(req.uri().path(), &metrics, *role.borrow());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }))
}
