//! Assembling the server: its routes (the v1 API with its description, the OAuth2 provider, the
//! web app, health and metrics) under the layers of [`crate::http::middleware`], served with
//! [`crate::http::serve`] alongside the background jobs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;

use crate::http::middleware::metrics_handle;
use crate::http::problem::problem_response;
use crate::http::serve::Running;
use crate::state::AppState;

/// The whole application: the API, the OAuth2 provider, the web app and the operations routes,
/// with the layers every request passes through.
pub fn router(state: Arc<AppState>) -> Router {
    let (v1, api) = crate::v1::routes();
    let api_json = Arc::new(serde_json::to_string_pretty(&api).unwrap_or_default());
    let routes = Router::new()
        .merge(v1)
        .merge(crate::auth::routes().with_state(Arc::clone(&state.auth)))
        .route("/", get(crate::http::web::page))
        .route("/callback", get(crate::http::web::page))
        .route("/app/{*file}", get(crate::http::web::file))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(move || {
                let body = api_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*body).clone()) }
            }),
        );
    crate::http::middleware::layered(routes, &state.config.server, state.config.tls()).with_state(state)
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let store = state.ledger.store().customer(bp_core::CustomerId::from_uuid(uuid::Uuid::nil())).await;
    let security = state.security.security_state(bp_core::CustomerId::from_uuid(uuid::Uuid::nil())).await;
    match (store, security) {
        (Ok(_), Ok(_)) => "ready".into_response(),
        _ => {
            problem_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Not ready", "the store is not reachable")
        }
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    if let Some(stats) = state.relay_stats.get() {
        use std::sync::atomic::Ordering::Relaxed;
        // Gauges of integer counts: exact in an f64 below 2^53.
        let g = |v: &std::sync::atomic::AtomicU64| v.load(Relaxed) as f64;
        metrics::gauge!("bp_relay_published_events").set(g(&stats.published));
        metrics::gauge!("bp_relay_position").set(g(&stats.position));
        metrics::gauge!("bp_relay_waiting_events").set(g(&stats.waiting));
        metrics::gauge!("bp_relay_oldest_waiting_ms").set(g(&stats.oldest_waiting_ms));
        metrics::gauge!("bp_relay_failures").set(g(&stats.failures));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_handle().render()).into_response()
}

/// Serves `state` on `listener` until stopped (or Ctrl-C / SIGTERM when `signals`), with TLS
/// when configured, event streams on connections of their own served by
/// [`crate::events::stream_conn`]; starts the background sweeper of expired payment holds, the
/// outbox relay and the audit log's tail, which stop with it.
pub async fn serve(state: Arc<AppState>, listener: std::net::TcpListener, signals: bool) -> std::io::Result<Running> {
    metrics_handle();
    let sweeper = AbortOnDrop(tokio::spawn(expire_holds(state.clone())));
    let relay = AbortOnDrop(spawn_relay(&state));
    let audit_tail = AbortOnDrop(tokio::spawn(crate::events::bridge::tail_audit(
        Arc::clone(&state.security),
        Arc::clone(&state.hub),
        Arc::clone(&state.auth.audit_written),
        Arc::clone(&state.audit_position),
    )));
    let stopping = state.clone();
    // Event streams end once they have sent what their ring holds, so that graceful shutdown
    // does not wait for them (their clients resume elsewhere); new ones are refused.
    let stopping = move || stopping.hub.close();
    let config = state.config.server.clone();
    let router = router(state);
    let jobs = (sweeper, relay, audit_tail);
    crate::http::serve::serve(listener, router, &config, signals, crate::events::stream_conn::Lean, stopping, jobs)
        .await
}

/// Runs the bridge from the bus to this server's streams, then the outbox relay from the store to
/// the bus, woken after each commit.
fn spawn_relay(state: &Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let config = bp_notify::relay::RelayConfig {
        name: state.config.bus.relay_cursor_name(),
        idle_wait_ms: 100,
        ..Default::default()
    };
    let mut relay = bp_notify::relay::Relay::new(Arc::clone(state.ledger.store()), Arc::clone(&state.bus), config);
    relay.set_waker(Arc::clone(&state.relay_waker));
    let _ = state.relay_stats.set(relay.stats());
    let state = Arc::clone(state);
    tokio::spawn(async move {
        // The bridge ends with this task (also when it is aborted while waiting for it).
        let (subscribed, ready) = oneshot::channel();
        let _bridge = AbortOnDrop(tokio::spawn(crate::events::bridge::bridge(
            Arc::clone(&state.bus),
            Arc::clone(&state.hub),
            subscribed,
        )));
        let _ = ready.await;
        relay.run(Arc::clone(&state.clock), std::future::pending()).await;
    })
}

/// Aborts a task when dropped (with the task that owns it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Voids payments whose SCA was not answered in time, releasing their holds.
async fn expire_holds(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match state.ledger.expire_holds(state.now(), 500).await {
            Ok(0) => {}
            Ok(n) => {
                state.relay_waker.notify_one();
                tracing::info!(voided = n, "expired unconfirmed payments");
            }
            Err(e) => tracing::warn!(error = %e, "expiring holds failed"),
        }
    }
}
