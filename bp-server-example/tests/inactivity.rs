//! The inactivity limit (PSD2 RTS art. 4(3)(d)) over real HTTP, with a limit of two seconds:
//! use keeps a session alive; refreshing, background requests and tickets do not; an idle
//! session is ended — stored, audited, its streams closed — and a request after the deadline is
//! told to sign in again, also after a restart, from the last activity the store kept.

mod common;

use std::time::{Duration, Instant};

use bp_core::security::AuditKind;
use common::sse::Stream;
use common::{Api, Server, assert_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALL: &str = "openid profile accounts payments offline_access";
const IDLE_S: u64 = 2;

async fn idle_server() -> Server {
    Server::start_with(|c| c.auth.idle_timeout_s = IDLE_S).await
}

/// The audit entries that ended a session for inactivity.
async fn idle_endings(server: &Server) -> Vec<Value> {
    let audit = server.state.security.audit_after(0, 1000).await.expect("audit");
    audit
        .into_iter()
        .filter(|e| e.kind == AuditKind::SessionRevoked && e.detail.get("reason") == Some(&json!("inactivity")))
        .map(|e| Value::Object(e.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_keeps_a_session_and_its_end_closes_its_streams() {
    let mut server = idle_server().await;
    let ada = server.customer("ada-idle-use", 0, 0).await;
    let tokens = server.login(&ada, ALL).await;
    let api = Api::new(&server, &tokens);
    let mut stream = Stream::open(&server, &api, None).await;
    // Twice the limit, used every half second: still signed in.
    let started = Instant::now();
    let mut last_use = started;
    while started.elapsed() < Duration::from_secs(2 * IDLE_S) {
        last_use = Instant::now();
        assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK, "after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then nothing: the session ends, and its stream says so and closes. The limit runs from the
    // last use as the server saw it, which is after the last request was sent (not after its
    // answer, which a loaded machine delays).
    let last = stream.next_within(1, Duration::from_secs(3 * IDLE_S)).await;
    assert_eq!(last[0].event, "security.session_revoked", "{last:?}");
    assert_eq!(last[0].data["detail"]["reason"], "inactivity");
    let idle = last_use.elapsed();
    assert!(idle >= Duration::from_millis(1500), "not before the limit: {idle:?} after the last use");
    assert!(stream.closes_within(Duration::from_secs(5)).await, "the stream ends with its session");
    let (status, _) = api.get("/v1/accounts").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = server.site.refresh(tokens["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no refresh either");
    let ended = idle_endings(&server).await;
    assert_eq!(ended.len(), 1, "audited once: {ended:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_tickets_and_background_requests_are_not_activity() {
    let mut server = idle_server().await;
    let bob = server.customer("bob-idle-refresh", 0, 0).await;
    let tokens = server.login(&bob, ALL).await;
    let mut refresh = tokens["refresh_token"].as_str().expect("rt").to_owned();
    let mut api = Api::new(&server, &tokens);
    let started = Instant::now();
    let mut refreshed = 0;
    let ended = loop {
        assert!(started.elapsed() < Duration::from_secs(4 * IDLE_S), "still signed in after {:?}", started.elapsed());
        let (ticket, _) = api.post("/v1/events/ticket", &json!({}), None).await;
        let background = api.request(reqwest::Method::GET, "/v1/accounts").header("BP-Activity", "background");
        let background = background.send().await.expect("get").status();
        let r = server.site.refresh(&refresh).await;
        if r.status() != StatusCode::OK {
            let body: Value = r.json().await.expect("json");
            break (ticket, background, body);
        }
        let next: Value = r.json().await.expect("json");
        refresh = next["refresh_token"].as_str().expect("rt").to_owned();
        api = Api::new(&server, &next);
        refreshed += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    };
    assert!(refreshed >= 2, "refreshes worked meanwhile ({refreshed})");
    assert!(started.elapsed() >= Duration::from_millis(1500), "not before the limit: {:?}", started.elapsed());
    let (_, _, body) = &ended;
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert_eq!(body["session_ended"], "inactivity", "the refresh says why: {body}");
    assert_eq!(idle_endings(&server).await.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_deadline_survives_a_restart() {
    let mut server = idle_server().await;
    let carol = server.customer("carol-idle-restart", 0, 0).await;
    let tokens = server.login(&carol, "openid accounts").await;
    let api = Api::new(&server, &tokens);
    // Used past the sign-in's own deadline, then a restart: the store's last activity counts.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500 * IDLE_S) {
        assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    server.restart().await;
    let api = Api::new(&server, &tokens);
    assert_eq!(api.get("/v1/accounts").await.0, StatusCode::OK, "its last activity came through the restart");

    // Stopped past its deadline: the server that starts again has never seen it, and the first
    // request after the deadline is told to sign in again, and ends the session for good.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1000 * IDLE_S + 500)).await;
    server.restart().await;
    let api = Api::new(&server, &tokens);
    let (status, body) = api.get("/v1/accounts").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "session-inactive");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("sign in again")), "{body}");
    let ended = idle_endings(&server).await;
    assert_eq!(ended.len(), 1, "ended and audited: {ended:?}");
    let claims = api.token.split('.').nth(1).and_then(bp_server_example::auth::crypto::unb64).expect("a JWT");
    let claims: Value = serde_json::from_slice(&claims).expect("json");
    assert_eq!(ended[0]["session"], claims["sid"], "the audit entry names the session");
    let (status, body) = api.get("/v1/accounts").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    server.stop().await;
}
