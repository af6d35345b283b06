//! The HTTP adapter of the rail against wiremock: each answer of the contract becomes the
//! answer or `CallError` that bp-core's lifecycle expects (never `Refused` when money could have
//! moved), retries carry the same key and the same body, a submission that timed out is not
//! sent again (the status query finds it), and the circuit breaker opens, fails fast and closes
//! after a successful probe.

mod common;

use std::time::Duration;

use bp_core::clock::Clock;
use bp_core::external::{CallError, NotSent, PaymentRail, RailAnswer, RailStatus, ReasonCode, Refusal, Unknown};
use bp_core::iso20022::pacs002::Status;
use bp_core::iso20022::pacs008;
use bp_external::BreakerState;
use bp_external::contract::{PROBLEM_KEY_CONFLICT, PROBLEM_ORDER_NOT_FOUND, PROBLEM_REFUSED, Problem};
use chrono::TimeDelta;
use common::{key, order, rail, rail_with, report};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn base(server: &MockServer) -> String {
    format!("{}/", server.uri())
}

fn xml(status: u16, body: String) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body, "application/xml")
}

fn problem(status: u16, kind: &str, reason: Option<&str>) -> ResponseTemplate {
    let body = serde_json::to_vec(&Problem::new(kind, "t", reason)).expect("json");
    ResponseTemplate::new(status).set_body_raw(body, "application/problem+json")
}

async fn received(server: &MockServer, verb: &str) -> Vec<Request> {
    let all = server.received_requests().await.expect("recording");
    all.into_iter().filter(|r| r.method.as_str() == verb).collect()
}

#[tokio::test]
async fn each_reported_status_is_the_answer_and_the_order_is_a_pacs008_under_our_key() {
    let cases = [
        (Status::Accepted, None, RailAnswer::Accepted),
        (Status::Settled, None, RailAnswer::Settled),
        (Status::Pending, None, RailAnswer::Pending),
        (Status::Rejected, Some("AM04"), RailAnswer::Rejected { reason: Some(ReasonCode::parse("AM04").expect("c")) }),
    ];
    for (n, (status, reason, expected)) in (0u32..).zip(cases) {
        let server = MockServer::start().await;
        let k = key(n);
        Mock::given(method("POST"))
            .and(path("/orders"))
            .and(header("Idempotency-Key", k.as_str()))
            .and(header("Content-Type", "application/xml"))
            .respond_with(xml(202, report(&k, status, reason)))
            .expect(1)
            .mount(&server)
            .await;
        assert_eq!(rail(&base(&server)).submit(&order(10_000), &k).await, Ok(expected), "{status:?}");
        let posts = received(&server, "POST").await;
        let sent = pacs008::parse(std::str::from_utf8(&posts[0].body).expect("utf8")).expect("a pacs.008");
        assert_eq!(sent.message_id, k.as_str());
        assert_eq!(sent.transactions[0].end_to_end_id, k.as_str());
        assert_eq!(sent.transactions[0].amount, order(10_000).amount);
    }
}

#[tokio::test]
async fn a_refusal_is_refused_with_its_reason_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(problem(422, PROBLEM_REFUSED, Some("FF01")))
        .expect(1)
        .mount(&server)
        .await;
    let code = Some(ReasonCode::parse("FF01").expect("code"));
    assert_eq!(rail(&base(&server)).submit(&order(100), &key(1)).await, Err(CallError::Refused(Refusal { code })));
}

#[tokio::test]
async fn a_4xx_that_does_not_say_refused_is_unknown_never_refused() {
    // A wrong path, a key conflict, an authorisation problem: the order may exist at the rail.
    for answer in [
        ResponseTemplate::new(404),
        problem(409, PROBLEM_KEY_CONFLICT, None),
        ResponseTemplate::new(401),
        ResponseTemplate::new(302).insert_header("Location", "/elsewhere"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(answer).mount(&server).await;
        let result = rail(&base(&server)).submit(&order(100), &key(1)).await;
        assert_eq!(result, Err(CallError::Unknown(Unknown::MalformedAnswer)));
        assert_eq!(received(&server, "POST").await.len(), 1, "not retried");
    }
}

#[tokio::test]
async fn a_timeout_is_unknown_then_the_status_query_finds_the_one_order() {
    let server = MockServer::start().await;
    let k = key(2);
    Mock::given(method("POST"))
        .respond_with(xml(202, report(&k, Status::Accepted, None)).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/orders/{k}")))
        .respond_with(xml(200, report(&k, Status::Settled, None)))
        .mount(&server)
        .await;
    let (rail, _) = rail_with(&base(&server), 300, 100);
    assert_eq!(rail.submit(&order(100), &k).await, Err(CallError::Unknown(Unknown::Timeout)));
    assert_eq!(rail.status(&k).await, Ok(RailStatus::Known { answer: RailAnswer::Settled }));
    assert_eq!(received(&server, "POST").await.len(), 1, "the rail saw exactly one order");
}

#[tokio::test]
async fn a_status_query_is_retried_after_a_timeout_and_a_miss_is_not_found() {
    let server = MockServer::start().await;
    let k = key(3);
    Mock::given(method("GET"))
        .and(path(format!("/orders/{k}")))
        .respond_with(xml(200, report(&k, Status::Pending, None)).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/orders/{k}")))
        .respond_with(xml(200, report(&k, Status::Pending, None)))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/orders/{}", key(4))))
        .respond_with(problem(404, PROBLEM_ORDER_NOT_FOUND, None))
        .mount(&server)
        .await;
    let (rail, _) = rail_with(&base(&server), 300, 100);
    assert_eq!(rail.status(&k).await, Ok(RailStatus::Known { answer: RailAnswer::Pending }));
    assert_eq!(received(&server, "GET").await.len(), 2, "asked again after the timeout");
    assert_eq!(rail.status(&key(4)).await, Ok(RailStatus::NotFound));
    // A 404 without the contract's type (a wrong path) is no proof that the order is unknown.
    assert_eq!(rail.status(&key(5)).await, Err(CallError::Unknown(Unknown::MalformedAnswer)));
}

#[tokio::test]
async fn a_5xx_is_retried_with_the_same_key_and_body() {
    let server = MockServer::start().await;
    let k = key(6);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(xml(202, report(&k, Status::Accepted, None)))
        .with_priority(2)
        .mount(&server)
        .await;
    assert_eq!(rail(&base(&server)).submit(&order(100), &k).await, Ok(RailAnswer::Accepted));
    let posts = received(&server, "POST").await;
    assert_eq!(posts.len(), 3);
    for post in &posts {
        assert_eq!(post.headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()), Some(k.as_str()));
        assert_eq!(post.body, posts[0].body, "the very same bytes on every attempt");
    }
}

#[tokio::test]
async fn a_5xx_on_the_last_attempt_is_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let result = rail(&base(&server)).submit(&order(100), &key(7)).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::ServerError { status: 500 })));
    assert_eq!(received(&server, "POST").await.len(), 3, "attempts_max attempts");
}

#[tokio::test]
async fn a_malformed_answer_is_unknown() {
    let k = key(8);
    for body in ["not xml at all".to_owned(), report(&key(9), Status::Accepted, None), String::new()] {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(xml(200, body.clone())).mount(&server).await;
        let result = rail(&base(&server)).submit(&order(100), &k).await;
        assert_eq!(result, Err(CallError::Unknown(Unknown::MalformedAnswer)), "{body:?}");
    }
}

#[tokio::test]
async fn no_connection_is_not_sent() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let rail = rail(&format!("http://{addr}/"));
    assert_eq!(rail.submit(&order(100), &key(10)).await, Err(CallError::NotSent(NotSent::NoConnection)));
    assert_eq!(rail.status(&key(10)).await, Err(CallError::NotSent(NotSent::NoConnection)));
}

#[tokio::test]
async fn once_an_attempt_may_have_arrived_the_call_is_never_not_sent() {
    // A rail that takes the first status query and never answers, then is gone: the later
    // attempts find no connection, but the first may have been read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let rail_side = tokio::spawn(async move {
        let (connection, _) = listener.accept().await.expect("accept");
        drop(listener);
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(connection);
    });
    let (rail, _) = rail_with(&format!("http://{addr}/"), 300, 100);
    assert_eq!(rail.status(&key(12)).await, Err(CallError::Unknown(Unknown::Timeout)));
    rail_side.abort();
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_closes_after_a_successful_probe() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let (rail, clock) = rail_with(&base(&server), 2_000, 5);
    let k = key(11);
    // Two calls of three attempts: the fifth failure in a row opens the circuit, and the
    // second call's last attempt fails fast, after attempts that may have reached the rail.
    assert_eq!(rail.submit(&order(100), &k).await, Err(CallError::Unknown(Unknown::ServerError { status: 500 })));
    assert_eq!(rail.submit(&order(100), &k).await, Err(CallError::Unknown(Unknown::ServerError { status: 500 })));
    assert_eq!(rail.breaker().state(), BreakerState::Open);
    assert_eq!(received(&server, "POST").await.len(), 5);
    assert_eq!(rail.submit(&order(100), &k).await, Err(CallError::NotSent(NotSent::CircuitOpen)));
    assert_eq!(rail.status(&k).await, Err(CallError::NotSent(NotSent::CircuitOpen)));
    assert_eq!(received(&server, "POST").await.len(), 5, "nothing reached the rail while open");
    assert_eq!(rail.breaker().stats().rejected_total, 3);

    server.reset().await;
    Mock::given(method("POST")).respond_with(xml(202, report(&k, Status::Accepted, None))).mount(&server).await;
    clock.set(clock.now() + TimeDelta::milliseconds(1_000));
    assert_eq!(rail.breaker().state(), BreakerState::HalfOpen);
    assert_eq!(rail.submit(&order(100), &k).await, Ok(RailAnswer::Accepted), "the probe");
    assert_eq!(rail.breaker().state(), BreakerState::Closed);
    assert_eq!(rail.submit(&order(100), &k).await, Ok(RailAnswer::Accepted));
    assert_eq!(rail.breaker().stats().opened_total, 1);
}

#[tokio::test]
async fn an_order_in_a_currency_the_rail_does_not_carry_is_refused_unsent() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let mut in_dollars = order(100);
    in_dollars.amount = bp_core::Money::new(100, bp_core::Currency::USD);
    let code = Some(ReasonCode::currency_not_allowed());
    assert_eq!(rail(&base(&server)).submit(&in_dollars, &key(13)).await, Err(CallError::Refused(Refusal { code })));
    assert!(received(&server, "POST").await.is_empty(), "SEPA is euro only: nothing was sent");
}
