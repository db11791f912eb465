//! The HTTP listener (axum, HTTP/1 only): `/metrics`, `/health`, `/status` and the dashboard
//! `/`. Read-only: every handler renders the [`Hub`]'s latest snapshots, so a slow or hostile
//! client never touches the pipeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::Hub;

/// The router over `hub`.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/status", get(status))
        .with_state(hub)
}

/// Binds `addr`, warning when it is not a loopback address (the pages show paths, rule names
/// and alert labels; put a proxy with authentication in front when exposing them).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    if !addr.ip().is_loopback() {
        tracing::warn!(addr = %addr, "http listener is reachable from other hosts; /status shows paths and alert labels");
    }
    Ok(l)
}

/// A running listener: the address it was asked to bind, and how to stop it.
pub struct Running {
    /// The configured address (port 0 stays 0 here: it is what a reload compares).
    pub addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// How long a stopping listener may take to finish the requests it is serving.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Running {
    /// Binds `addr` ([`bind`]) and serves `hub` on it.
    pub async fn start(addr: SocketAddr, hub: Arc<Hub>) -> std::io::Result<Running> {
        let listener = bind(addr).await?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, hub, cancel.clone()));
        Ok(Running { addr, cancel, task })
    }

    /// Stops accepting, lets open requests finish (at most [`STOP_GRACE`]), and closes.
    pub async fn stop(self) {
        self.cancel.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_GRACE, self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// Serves until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, hub: Arc<Hub>, cancel: CancellationToken) {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "http listening (/, /metrics, /health, /status)");
    let res = axum::serve(listener, router(hub))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    match res {
        Ok(()) => tracing::debug!(addr = ?addr, "http listener stopped"),
        Err(e) => tracing::error!(error = %e, "http listener failed"),
    }
}

const JSON: &str = "application/json";

/// OpenMetrics when the client asks for it (Prometheus does), the classic text format
/// otherwise (what Prometheus's own client libraries do).
async fn metrics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> impl IntoResponse {
    let om = super::metrics::render(&hub);
    let wants_om = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_om {
        ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], om)
    } else {
        (
            [(header::CONTENT_TYPE, super::metrics::TEXT_CONTENT_TYPE)],
            super::metrics::to_text_format(&om),
        )
    }
}

async fn health(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let h = super::status::health(&hub);
    let code = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string_pretty(&h).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, JSON)], body + "\n")
}

async fn status(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let body = serde_json::to_string_pretty(&super::status::status(&hub)).unwrap_or_default();
    ([(header::CONTENT_TYPE, JSON)], body + "\n")
}

async fn dashboard(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::dashboard::render(&hub),
    )
}
