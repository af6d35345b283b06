//! The HTTP adapter of the loan provider against wiremock: the application travels as JSON
//! with our key, each answer of the contract becomes the decision, `DecisionStatus` or
//! `CallError` that bp-core's loan lifecycle expects (never `Refused` unless the provider said
//! so in the contract's words), a decision that timed out is not asked again but its status
//! is, retries carry the same key and bytes, and the breaker fails fast once open.

mod common;

use std::time::Duration;

use bp_core::external::loan::{DecisionStatus, LoanDecision, LoanProvider};
use bp_core::external::{CallError, NotSent, ReasonCode, Refusal, Unknown};
use bp_core::rate::Rate;
use bp_core::{Currency, Money};
use bp_external::BreakerState;
use bp_external::contract::Problem;
use bp_external::contract::loan::{PROBLEM_DECISION_NOT_FOUND, PROBLEM_KEY_CONFLICT, PROBLEM_REFUSED};
use common::{application, key, loans, loans_with};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn base(server: &MockServer) -> String {
    format!("{}/", server.uri())
}

fn approved_json() -> serde_json::Value {
    json!({
        "decision": "approved",
        "annual_rate": "0.059",
        "fee": {"amount": "100.00", "currency": "EUR"},
        "term_months": 24
    })
}

fn approved() -> LoanDecision {
    LoanDecision::Approved {
        annual_rate: Rate::parse("0.059").expect("rate"),
        fee: Money::new(10_000, Currency::EUR),
        term_months: 24,
    }
}

fn answer(status: u16, body: &serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
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
async fn each_decision_is_the_answer_and_the_application_is_json_under_our_key() {
    let declined = json!({"decision": "declined", "reason": "AM02"});
    let declined_bare = json!({"decision": "declined"});
    let zero_rate = json!({"decision": "approved", "annual_rate": "0", "fee": {"amount": "0.00", "currency": "EUR"}, "term_months": 6});
    let cases = [
        (201, approved_json(), approved()),
        (200, approved_json(), approved()),
        (201, declined, LoanDecision::Declined { reason: Some(ReasonCode::parse("AM02").expect("code")) }),
        (201, declined_bare, LoanDecision::Declined { reason: None }),
        (
            201,
            zero_rate,
            LoanDecision::Approved { annual_rate: Rate::ZERO, fee: Money::zero(Currency::EUR), term_months: 6 },
        ),
    ];
    for (n, (status, body, expected)) in (0u32..).zip(cases) {
        let server = MockServer::start().await;
        let k = key(n);
        Mock::given(method("POST"))
            .and(path("/loans/decisions"))
            .and(header("Idempotency-Key", k.as_str()))
            .and(header("Content-Type", "application/json"))
            .and(body_json(json!({
                "customer": "0190c0de-0000-7000-8000-000000000042",
                "amount": {"amount": "10000.00", "currency": "EUR"},
                "term_months": 24,
                "purpose": "a car",
                "requested_at": "2026-03-01T09:30:00Z"
            })))
            .respond_with(answer(status, &body))
            .expect(1)
            .mount(&server)
            .await;
        assert_eq!(
            loans(&base(&server)).decide(&application(1_000_000, 24, "a car"), &k).await,
            Ok(expected),
            "{body}"
        );
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
    let result = loans(&base(&server)).decide(&application(100_000, 12, "x"), &key(1)).await;
    assert_eq!(result, Err(CallError::Refused(Refusal { code })));
}

#[tokio::test]
async fn a_4xx_that_does_not_say_refused_is_unknown_never_refused() {
    for answer in [
        ResponseTemplate::new(404),
        problem(409, PROBLEM_KEY_CONFLICT, None),
        ResponseTemplate::new(403),
        ResponseTemplate::new(301).insert_header("Location", "/elsewhere"),
        problem(422, bp_external::contract::fx::PROBLEM_REFUSED, None),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(answer).mount(&server).await;
        let result = loans(&base(&server)).decide(&application(100_000, 12, "x"), &key(1)).await;
        assert_eq!(result, Err(CallError::Unknown(Unknown::MalformedAnswer)));
        assert_eq!(received(&server, "POST").await.len(), 1, "not retried");
    }
}

#[tokio::test]
async fn a_5xx_is_retried_with_the_same_key_and_body_then_unknown_on_the_last_attempt() {
    let server = MockServer::start().await;
    let k = key(2);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(answer(201, &approved_json())).with_priority(2).mount(&server).await;
    assert_eq!(loans(&base(&server)).decide(&application(1_000_000, 24, "a car"), &k).await, Ok(approved()));
    let posts = received(&server, "POST").await;
    assert_eq!(posts.len(), 3);
    for post in &posts {
        assert_eq!(post.headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()), Some(k.as_str()));
        assert_eq!(post.body, posts[0].body, "the very same bytes on every attempt");
    }

    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let result = loans(&base(&server)).decide(&application(1_000_000, 24, "a car"), &k).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::ServerError { status: 500 })));
    assert_eq!(received(&server, "POST").await.len(), 3);
}

#[tokio::test]
async fn a_decision_that_times_out_is_unknown_then_its_status_is_asked_with_the_same_key() {
    let server = MockServer::start().await;
    let k = key(3);
    Mock::given(method("POST"))
        .respond_with(answer(201, &approved_json()).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/loans/decisions/{k}")))
        .respond_with(answer(200, &approved_json()).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/loans/decisions/{k}")))
        .respond_with(answer(200, &approved_json()))
        .with_priority(2)
        .mount(&server)
        .await;
    let (loans, _) = loans_with(&base(&server), 300, 100);
    let result = loans.decide(&application(1_000_000, 24, "a car"), &k).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::Timeout)));
    assert_eq!(received(&server, "POST").await.len(), 1, "the provider saw one application");
    assert_eq!(loans.status(&k).await, Ok(DecisionStatus::Known { decision: approved() }));
    assert_eq!(received(&server, "GET").await.len(), 2, "asked again after the timeout");
}

#[tokio::test]
async fn not_found_is_a_miss_only_with_the_contracts_problem_type() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/loans/decisions/{}", key(4))))
        .respond_with(problem(404, PROBLEM_DECISION_NOT_FOUND, None))
        .mount(&server)
        .await;
    let loans = loans(&base(&server));
    assert_eq!(loans.status(&key(4)).await, Ok(DecisionStatus::NotFound));
    assert_eq!(loans.status(&key(5)).await, Err(CallError::Unknown(Unknown::MalformedAnswer)));
}

#[tokio::test]
async fn an_answer_outside_the_contract_is_unknown() {
    let bodies = [
        json!({"decision": "maybe"}),
        json!({"decision": "approved", "annual_rate": 0.059, "fee": {"amount": "100.00", "currency": "EUR"}, "term_months": 24}),
        json!({"decision": "approved", "annual_rate": "0.059", "fee": {"amount": "100.001", "currency": "EUR"}, "term_months": 24}),
        json!({"decision": "approved", "annual_rate": "-0.05", "fee": {"amount": "1.00", "currency": "EUR"}, "term_months": 24}),
        json!({"decision": "approved", "annual_rate": "0.059", "fee": {"amount": "1.00", "currency": "EUR"}}),
        json!({"decision": "declined", "reason": "not a code"}),
    ];
    for body in bodies {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(answer(201, &body)).mount(&server).await;
        Mock::given(method("GET")).respond_with(answer(200, &body)).mount(&server).await;
        let loans = loans(&base(&server));
        let malformed = Err(CallError::Unknown(Unknown::MalformedAnswer));
        assert_eq!(loans.decide(&application(100_000, 24, "x"), &key(6)).await, malformed, "{body}");
        assert_eq!(loans.status(&key(6)).await, malformed.map(|d| DecisionStatus::Known { decision: d }), "{body}");
    }
}

#[tokio::test]
async fn no_connection_is_not_sent_and_the_breaker_fails_fast_once_open() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (loans, _) = loans_with(&format!("http://{addr}/"), 2_000, 4);
    let result = loans.decide(&application(100_000, 24, "x"), &key(7)).await;
    assert_eq!(result, Err(CallError::NotSent(NotSent::NoConnection)));
    assert_eq!(loans.breaker().state(), BreakerState::Closed, "three failures of four");
    assert_eq!(loans.status(&key(7)).await, Err(CallError::NotSent(NotSent::CircuitOpen)), "the fourth opened it");
    assert_eq!(loans.breaker().state(), BreakerState::Open);
    assert_eq!(loans.breaker().stats().opened_total, 1);
}
