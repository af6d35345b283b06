//! The layers every request of the server passes through, outermost first: a bound on requests
//! in flight, a request id (made, or the client's, and echoed), panics answered as problems, one
//! log line and one latency sample per request, the client's address (behind trusted proxies),
//! security headers, a timeout and a body limit;
//! and the problem answers of unknown routes and methods. The process's metrics recorder is here
//! too, since the latency samples are its first use.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

use crate::config::ServerConfig;
use crate::http::client::client_addr;
use crate::http::problem::{ApiError, problem_response};

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

/// `routes` with the problem answers of unknown routes and methods, and every layer, bounded as
/// `config` says; `hsts` when the server is reached over HTTPS.
pub fn layered<S: Clone + Send + Sync + 'static>(routes: Router<S>, config: &ServerConfig, hsts: bool) -> Router<S> {
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let trusted: Arc<[ipnet::IpNet]> = config.trusted_proxies.clone().into();
    routes
        .fallback(|| async { ApiError::NotFound("route").into_response() })
        .method_not_allowed_fallback(|| async {
            problem_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(config.body_bytes_max))
        // One layer for four steps: each `from_fn` layer clones the service inside it and boxes
        // a future per request.
        .layer(middleware::from_fn(move |req, next| per_request(Arc::clone(&trusted), hsts, timeout, req, next)))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            ApiError::Internal.into_response()
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(tower::limit::ConcurrencyLimitLayer::new(config.concurrency_max))
}

/// The steps of every request, outermost first: it is observed ([`observe`]), its client's
/// address noted ([`client_addr`]), the security headers put on its answer ([`secure`]), and it
/// is answered within `timeout` ([`within`]).
async fn per_request(
    trusted: Arc<[ipnet::IpNet]>,
    hsts: bool,
    timeout: Duration,
    req: Request,
    next: Next,
) -> Response {
    observe(req, |mut req| async move {
        client_addr(&trusted, &mut req);
        let is_photo = req.uri().path() == "/v1/me/photo";
        let mut response = within(timeout, next.run(req)).await;
        secure(&mut response, hsts, is_photo);
        response
    })
    .await
}

/// The answer of `run`, or a timeout problem when it takes longer than `timeout`.
async fn within(timeout: Duration, run: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
            "the request took too long; retry (payments with the same Idempotency-Key)",
        ),
    }
}

/// The security headers of every answer (`is_photo`: the customer's photo, which needs no CSP).
fn secure(response: &mut Response, hsts: bool, is_photo: bool) {
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
}

/// One log line and one histogram sample per request: method, route template (never the
/// query or ids), status, duration, request id. Nothing else of the request is logged.
async fn observe<F: Future<Output = Response>>(req: Request, run: impl FnOnce(Request) -> F) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = req.extensions().get::<RequestId>().cloned();
    let response = run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics::histogram!(
        "bp_http_request_duration_seconds",
        "method" => method.to_string(),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .record(elapsed.as_secs_f64());
    // Fields as `&str`, not `%` (Display): the JSON formatter writes a string as it is, and a
    // Display value through a `String` of its own first.
    tracing::info!(
        request_id = request_id.as_ref().and_then(|r| r.header_value().to_str().ok()).unwrap_or("-"),
        method = method.as_str(),
        route,
        status,
        duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn slow_requests_are_answered_with_a_timeout_problem() {
        let app: Router = Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
            .route("/fast", get(|| async { "ok" }))
            .layer(middleware::from_fn(|req, next: Next| within(Duration::from_millis(50), next.run(req))));
        let slow =
            app.clone().oneshot(Request::get("/slow").body(Body::empty()).expect("request")).await.expect("answer");
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(slow.headers()[header::CONTENT_TYPE], crate::http::problem::PROBLEM_JSON);
        let fast = app.oneshot(Request::get("/fast").body(Body::empty()).expect("request")).await.expect("answer");
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
