//! Assembling the server: routes, middleware (request ids, logs, metrics, timeouts, body limits,
//! security headers, panics as problems), the OpenAPI description, and serving with graceful
//! shutdown, over plain HTTP on loopback or over TLS.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aide::axum::ApiRouter;
use aide::openapi::{Components, Info, OpenApi, ReferenceOr, SecurityScheme, Server as ApiServer};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

use crate::auth::oauth;
use crate::http::problem::{ApiError, problem_response};
use crate::state::AppState;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The process-wide Prometheus recorder (metrics has one global recorder).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("bp_http_request_duration_seconds".to_owned()), &buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (tests embedding several servers share one).
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The API description, generated from the routes and the wire types.
pub fn api_description() -> OpenApi {
    let mut api = base_description();
    let _ = api_router().finish_api(&mut api);
    api
}

fn base_description() -> OpenApi {
    let mut components = Components::default();
    components.security_schemes.insert(
        "bearer".to_owned(),
        ReferenceOr::Item(SecurityScheme::Http {
            scheme: "bearer".to_owned(),
            bearer_format: Some("JWT".to_owned()),
            description: Some(
                "An access token of the built-in OAuth2 provider (see /.well-known/openid-configuration)".to_owned(),
            ),
            extensions: Default::default(),
        }),
    );
    OpenApi {
        info: Info {
            title: "bp — Bank Payments API".to_owned(),
            version: "1".to_owned(),
            description: Some(
                "Accounts, history, transfers with strong customer authentication, beneficiaries and devices. \
                 Amounts are decimal strings. Errors are RFC 9457 problems."
                    .to_owned(),
            ),
            ..Info::default()
        },
        servers: vec![ApiServer { url: "/".to_owned(), ..ApiServer::default() }],
        components: Some(components),
        ..OpenApi::default()
    }
}

fn api_router() -> ApiRouter<Arc<AppState>> {
    aide::generate::extract_schemas(true);
    aide::generate::infer_responses(true);
    crate::v1::routes()
}

/// The whole application.
pub fn router(state: Arc<AppState>) -> Router {
    let mut api = base_description();
    let api_routes = api_router().finish_api(&mut api);
    let api_json = Arc::new(serde_json::to_string_pretty(&api).unwrap_or_default());
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let hsts = state.config.tls();
    Router::new()
        .merge(api_routes)
        .route("/.well-known/openid-configuration", get(oauth::discovery))
        .route("/oauth2/jwks", get(oauth::jwks))
        .route("/oauth2/authorize", get(oauth::authorize))
        .route("/oauth2/login/password", post(oauth::login_password))
        .route("/oauth2/login/second-factor", post(oauth::login_second_factor))
        .route("/oauth2/login.css", get(oauth::login_css))
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/userinfo", get(oauth::userinfo))
        .route("/", get(crate::http::web::page))
        .route("/callback", get(crate::http::web::page))
        .route("/app/{*file}", get(crate::http::web::file))
        .route("/v1/events", get(crate::events::stream))
        .route("/v1/events/ticket", post(crate::events::ticket))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(move || {
                let body = api_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*body).clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("route").into_response() })
        .method_not_allowed_fallback(|| async {
            problem_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(state.config.server.body_bytes_max))
        .layer(middleware::from_fn(move |req, next| timeout_layer(timeout, req, next)))
        .layer(middleware::from_fn(move |req, next| headers_layer(hsts, req, next)))
        .layer(middleware::from_fn(observe))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            ApiError::Internal.into_response()
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(tower::limit::ConcurrencyLimitLayer::new(state.config.server.concurrency_max))
        .with_state(state)
}

async fn timeout_layer(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
            "the request took too long; retry (payments with the same Idempotency-Key)",
        ),
    }
}

async fn headers_layer(hsts: bool, req: Request, next: Next) -> Response {
    let is_photo = req.uri().path() == "/v1/me/photo";
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if !is_photo {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    if hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// One log line and one histogram sample per request: method, route template (never the
/// query or ids), status, duration, request id. Nothing else of the request is logged.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let request_id =
        req.extensions().get::<RequestId>().and_then(|r| r.header_value().to_str().ok()).unwrap_or("-").to_owned();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::histogram!(
        "bp_http_request_duration_seconds",
        "method" => method.to_string(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .record(elapsed.as_secs_f64());
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
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

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, and returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Waits until the server stops by itself (a signal).
    pub async fn wait(self) -> std::io::Result<()> {
        let Running { task, shutdown, .. } = self;
        let _keep = shutdown;
        task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Serves `state` on `listener` until `stop` (or Ctrl-C / SIGTERM when `signals`), with TLS
/// when configured; starts the background sweeper of expired payment holds.
pub async fn serve(state: Arc<AppState>, listener: std::net::TcpListener, signals: bool) -> std::io::Result<Running> {
    metrics_handle();
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let sweeper = tokio::spawn(expire_holds(state.clone()));
    let relay = spawn_relay(&state);
    let audit_tail = tokio::spawn(crate::events::tail_audit(state.clone()));
    let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
    let send_timeout = Duration::from_millis(state.config.server.send_timeout_ms);
    let tls = match (&state.config.server.tls_cert_path, &state.config.server.tls_key_path) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => None,
    };
    let stopping = state.clone();
    let router = router(state);
    let app = router.clone().into_make_service_with_connect_info::<SocketAddr>();
    let stop = async move {
        tokio::select! {
            _ = rx => {}
            _ = shutdown_signal(), if signals => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
        // Event streams end once they have sent what their ring holds, so that graceful shutdown
        // does not wait for them (their clients resume elsewhere); new ones are refused.
        stopping.hub.close();
    };
    let task = tokio::spawn(async move {
        let result = match tls {
            None => {
                listener.set_nonblocking(true)?;
                let listener = Split::new(tokio::net::TcpListener::from_std(listener)?, router, send_timeout)?;
                // (`tap_io` only so that axum knows the connection's address for ConnectInfo.)
                let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
                axum::serve(listener, app).with_graceful_shutdown(stop).await
            }
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    stop.await;
                    h.graceful_shutdown(Some(grace));
                });
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                    .acceptor(crate::http::send_timeout::Acceptor { limit: send_timeout });
                axum_server::from_tcp(listener).acceptor(acceptor).handle(handle).serve(app).await
            }
        };
        sweeper.abort();
        relay.abort();
        audit_tail.abort();
        result
    });
    Ok(Running { addr, shutdown: Some(tx), task })
}

/// The plain-TCP listener. Each accepted connection gets TCP_NODELAY (a small write, an event on
/// a stream, must not wait for the client's delayed ACK of the previous one: Nagle, up to 40 ms)
/// and is looked at: one that opens with an event-stream request is served by
/// [`crate::events::stream_conn`] (without hyper's per-connection buffers), every other one is handed
/// to axum and hyper through [`Listener::accept`](axum::serve::Listener::accept), with the send
/// timeout.
struct Split {
    incoming: tokio::sync::mpsc::Receiver<(tokio::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
    send_timeout: Duration,
}

impl Split {
    fn new(listener: tokio::net::TcpListener, router: Router, send_timeout: Duration) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, incoming) = tokio::sync::mpsc::channel(1024);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (tx, router) = (tx.clone(), router.clone());
                tokio::spawn(async move {
                    if crate::events::stream_conn::opens_a_stream(&tcp).await {
                        crate::events::stream_conn::serve(tcp, peer, router).await;
                    } else {
                        // Fails only when the server has stopped taking connections.
                        let _ = tx.send((tcp, peer)).await;
                    }
                });
            }
        });
        Ok(Self { incoming, local, accepting, send_timeout })
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for Split {
    type Io = crate::http::send_timeout::SendTimeout<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some((tcp, peer)) => (crate::http::send_timeout::SendTimeout::new(tcp, self.send_timeout), peer),
            // The accepting task is gone (only when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
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
        let _bridge = AbortOnDrop(tokio::spawn(crate::events::bridge(Arc::clone(&state), subscribed)));
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn slow_requests_are_answered_with_a_timeout_problem() {
        let app: Router = Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
            .route("/fast", get(|| async { "ok" }))
            .layer(middleware::from_fn(|req, next| timeout_layer(Duration::from_millis(50), req, next)));
        let slow =
            app.clone().oneshot(Request::get("/slow").body(Body::empty()).expect("request")).await.expect("answer");
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(slow.headers()[header::CONTENT_TYPE], crate::http::problem::PROBLEM_JSON);
        let fast = app.oneshot(Request::get("/fast").body(Body::empty()).expect("request")).await.expect("answer");
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
