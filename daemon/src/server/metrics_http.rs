//! `[metrics] listen`: a small HTTP/1.1 server (hyper) that answers `GET /metrics` with the
//! Prometheus text exposition ([`Registry::prometheus_text`]) and everything else with 404 or
//! 405. Each connection is served in its own task, bounded in time, and at most
//! [`MAX_CONNECTIONS`] at once: a scraper that hangs cannot hold the daemon.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, watch};

use crate::server::metrics::CONTENT_TYPE;
use crate::server::registry::Registry;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

/// How long one connection may take, reading the request included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` now (so that a taken port is an error at start), then serves in the background
/// until `shutdown` turns true.
pub async fn start(
    addr: SocketAddr,
    node: String,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("metrics.listen {addr}: {e}"))?;
    tracing::info!(%addr, "serving Prometheus metrics on http://{addr}/metrics");
    let node: Arc<str> = node.into();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.changed() => return,
            };
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let (registry, node) = (registry.clone(), node.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (registry, node) = (registry.clone(), node.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &registry, &node)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(16 * 1024)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                drop(permit);
            });
        }
    }))
}

fn answer(req: &Request<Incoming>, registry: &Registry, node: &str) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            reply(StatusCode::OK, CONTENT_TYPE, registry.prometheus_text(node))
        }
        (_, "/metrics") => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "metrics are at /metrics\n".into()),
    }
}
