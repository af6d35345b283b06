//! Assembling the server: its routes (the v1 API with its description, the OAuth2 provider, the
//! web app, health and metrics) under the layers of [`crate::http::middleware`], served with
//! [`crate::http::serve`] alongside the background [`jobs`](crate::jobs).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::middleware::metrics_handle;
use crate::http::problem::problem_response;
use crate::http::serve::Running;
use crate::state::AppState;

/// The whole application: the API, the OAuth2 provider, the web app and the operations routes,
/// with the layers every request passes through.
pub fn router(state: Arc<AppState>) -> Router {
    let (v1, api) = crate::v1::routes();
    let api_json = Arc::new(serde_json::to_string_pretty(&api).unwrap_or_default());
    let mut routes = Router::new()
        .merge(v1)
        .merge(crate::auth::routes().with_state(Arc::clone(&state.auth)))
        .merge(crate::rail_webhooks::routes())
        .route("/", get(crate::http::web::page))
        .route("/callback", get(crate::http::web::page))
        .route("/app/{*file}", get(crate::http::web::file))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            get(move || {
                let body = api_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*body).clone()) }
            }),
        );
    if state.config.metrics_on_main_listener() {
        routes = routes.route("/metrics", get(metrics_text));
    }
    crate::http::middleware::layered(routes, &state.config.server, state.config.public_https()).with_state(state)
}

/// `/metrics` on a listener of its own (`server.metrics_listen`), stopped when dropped.
#[derive(Debug)]
pub struct MetricsServer(tokio::task::JoinHandle<()>);

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `/metrics` of `state` on `listener`, plain HTTP: for a monitoring network, not for
/// customers.
pub fn serve_metrics(state: Arc<AppState>, listener: std::net::TcpListener) -> std::io::Result<MetricsServer> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let routes = Router::new().route("/metrics", get(metrics_text)).with_state(state);
    Ok(MetricsServer(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, routes).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    })))
}

async fn livez() -> &'static str {
    "ok"
}

/// How long `/readyz` waits for the stores' answers before it answers 503 (milliseconds): well
/// under a load balancer's probe timeout, and under the MongoDB driver's own server selection
/// timeout, which would otherwise hold the probe for `storage.mongodb.timeout_ms`.
pub const READY_TIMEOUT_MS: u64 = 2_000;

/// Ready when the ledger and the security records each answer a read within
/// [`READY_TIMEOUT_MS`]: on SQLite a read connection's query, on MongoDB a round trip to the
/// server (the log's head, then a security record).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let nobody = bp_core::CustomerId::from_uuid(uuid::Uuid::nil());
    let reads = async {
        let store = state.ledger.store().customer(nobody).await;
        let security = state.security.security_state(nobody).await;
        store.is_ok() && security.is_ok()
    };
    let timeout = std::time::Duration::from_millis(READY_TIMEOUT_MS);
    match tokio::time::timeout(timeout, reads).await {
        Ok(true) => "ready".into_response(),
        Ok(false) => {
            problem_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Not ready", "the store is not reachable")
        }
        Err(_) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Not ready",
            &format!("the store did not answer within {READY_TIMEOUT_MS} ms"),
        ),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    // Gauges of integer counts: exact in an f64 below 2^53.
    let g = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed) as f64;
    if let Some(stats) = state.relay_stats.get() {
        metrics::gauge!("bp_relay_published_events").set(g(&stats.published));
        metrics::gauge!("bp_relay_position").set(g(&stats.position));
        metrics::gauge!("bp_relay_waiting_events").set(g(&stats.waiting));
        metrics::gauge!("bp_relay_oldest_waiting_ms").set(g(&stats.oldest_waiting_ms));
        metrics::gauge!("bp_relay_failures").set(g(&stats.failures));
    }
    if let Some(stats) = &state.sqlite_writer {
        metrics::gauge!("bp_sqlite_writer_batches").set(g(&stats.batches));
        metrics::gauge!("bp_sqlite_writer_commands").set(g(&stats.commands));
        metrics::gauge!("bp_sqlite_writer_retried_batches").set(g(&stats.retried));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_handle().render()).into_response()
}

/// Serves `state` on `listener` until stopped (or Ctrl-C / SIGTERM when `signals`), with TLS
/// when configured, event streams on connections of their own served by
/// [`crate::events::stream_conn`]; starts the background [`jobs`](crate::jobs), which stop with
/// it.
pub async fn serve(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
    signals: bool,
) -> std::io::Result<Running> {
    metrics_handle();
    let metrics = metrics.map(|l| serve_metrics(Arc::clone(&state), l)).transpose()?;
    let jobs = crate::jobs::start(&state);
    let jobs = async move {
        jobs.stop().await;
        drop(metrics);
    };
    let stopping = state.clone();
    // Event streams end once they have sent what their ring holds, so that graceful shutdown
    // does not wait for them (their clients resume elsewhere); new ones are refused.
    let stopping = move || stopping.hub.close();
    let config = state.config.server.clone();
    let router = router(state);
    crate::http::serve::serve(listener, router, &config, signals, crate::events::stream_conn::Lean, stopping, jobs)
        .await
}
