//! The HTTP adapter of the FX provider against wiremock: each answer of the contract becomes
//! the quote or `CallError` that bp-core expects (never `Refused` unless the provider said so
//! in the contract's words), the ask travels as JSON with our key, retries carry the same key
//! and the same bytes, a quote request that timed out is not sent again, a read is, and the
//! circuit breaker fails fast once open.

mod common;

use std::time::Duration;

use bp_core::external::fx::{FxProvider, ProviderQuote, QuoteId};
use bp_core::external::{CallError, NotSent, ReasonCode, Refusal, Unknown};
use bp_core::rate::Rate;
use bp_core::{Currency, Money};
use bp_external::BreakerState;
use bp_external::contract::fx::{PROBLEM_KEY_CONFLICT, PROBLEM_QUOTE_NOT_FOUND, PROBLEM_REFUSED};
use bp_external::contract::{PROBLEM_REFUSED as RAIL_REFUSED, Problem};
use chrono::TimeZone;
use common::{fx, fx_with, key, quote_request};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn base(server: &MockServer) -> String {
    format!("{}/", server.uri())
}

/// The quote the provider gives for 1,000.00 EUR into USD, as the contract writes it.
fn quote_json(id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "source": {"amount": "1000.00", "currency": "EUR"},
        "target_currency": "USD",
        "rate": "1.0842",
        "fee": {"amount": "4.50", "currency": "EUR"},
        "expires_at": "2026-03-01T09:31:00Z",
        "provider_reference": "fields we do not know are ignored"
    })
}

fn expected_quote(id: &str) -> ProviderQuote {
    ProviderQuote {
        id: QuoteId::parse(id).expect("id"),
        source: Money::new(100_000, Currency::EUR),
        target_currency: Currency::USD,
        rate: Rate::parse("1.0842").expect("rate"),
        fee: Money::new(450, Currency::EUR),
        expires_at: chrono::Utc.with_ymd_and_hms(2026, 3, 1, 9, 31, 0).single().expect("time"),
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
async fn a_quote_is_asked_with_json_under_our_key_and_read_back_by_id() {
    let server = MockServer::start().await;
    let k = key(1);
    Mock::given(method("POST"))
        .and(path("/fx/quotes"))
        .and(header("Idempotency-Key", k.as_str()))
        .and(header("Content-Type", "application/json"))
        .and(body_json(json!({"source": {"amount": "1000.00", "currency": "EUR"}, "target_currency": "USD"})))
        .respond_with(answer(201, &quote_json("q-1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fx/quotes/q-1"))
        .respond_with(answer(200, &quote_json("q-1")))
        .mount(&server)
        .await;
    let fx = fx(&base(&server));
    assert_eq!(fx.quote(&quote_request(100_000, Currency::USD), &k).await, Ok(expected_quote("q-1")));
    assert_eq!(fx.quote_by_id(&QuoteId::parse("q-1").expect("id")).await, Ok(Some(expected_quote("q-1"))));
}

#[tokio::test]
async fn a_repeated_key_answered_200_is_the_same_quote_and_a_base_path_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/fx/quotes"))
        .respond_with(answer(200, &quote_json("q-1")))
        .mount(&server)
        .await;
    // A base URL without its trailing slash still puts the contract's paths under it.
    let fx = fx(&format!("{}/v1", server.uri()));
    assert_eq!(fx.quote(&quote_request(100_000, Currency::USD), &key(1)).await, Ok(expected_quote("q-1")));
}

#[tokio::test]
async fn a_refusal_is_refused_with_its_reason_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(problem(422, PROBLEM_REFUSED, Some("AM03")))
        .expect(1)
        .mount(&server)
        .await;
    let code = Some(ReasonCode::currency_not_allowed());
    let result = fx(&base(&server)).quote(&quote_request(100_000, Currency::USD), &key(1)).await;
    assert_eq!(result, Err(CallError::Refused(Refusal { code })));
}

#[tokio::test]
async fn a_4xx_that_does_not_say_refused_in_the_fx_contract_is_unknown_never_refused() {
    // A wrong path, a key conflict, an authorisation problem, a redirect, another party's
    // refusal type: none is the provider saying that it will not quote.
    for answer in [
        ResponseTemplate::new(404),
        problem(409, PROBLEM_KEY_CONFLICT, None),
        ResponseTemplate::new(401),
        ResponseTemplate::new(302).insert_header("Location", "/elsewhere"),
        problem(422, RAIL_REFUSED, Some("AM03")),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(answer).mount(&server).await;
        let result = fx(&base(&server)).quote(&quote_request(100_000, Currency::USD), &key(1)).await;
        assert_eq!(result, Err(CallError::Unknown(Unknown::MalformedAnswer)));
        assert_eq!(received(&server, "POST").await.len(), 1, "not retried");
    }
}

#[tokio::test]
async fn a_5xx_is_retried_with_the_same_key_and_body_then_unknown_on_the_last_attempt() {
    let server = MockServer::start().await;
    let k = key(2);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(answer(201, &quote_json("q-2"))).with_priority(2).mount(&server).await;
    let fx = fx(&base(&server));
    assert_eq!(fx.quote(&quote_request(100_000, Currency::USD), &k).await, Ok(expected_quote("q-2")));
    let posts = received(&server, "POST").await;
    assert_eq!(posts.len(), 3);
    for post in &posts {
        assert_eq!(post.headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()), Some(k.as_str()));
        assert_eq!(post.body, posts[0].body, "the very same bytes on every attempt");
    }

    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let result = fx_with(&base(&server), 2_000, 100).0.quote(&quote_request(100_000, Currency::USD), &k).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::ServerError { status: 500 })));
    assert_eq!(received(&server, "POST").await.len(), 3, "attempts_max attempts");
}

#[tokio::test]
async fn a_quote_that_times_out_is_unknown_and_not_sent_again_but_a_read_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(201, &quote_json("q-3")).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fx/quotes/q-3"))
        .respond_with(answer(200, &quote_json("q-3")).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fx/quotes/q-3"))
        .respond_with(answer(200, &quote_json("q-3")))
        .with_priority(2)
        .mount(&server)
        .await;
    let (fx, _) = fx_with(&base(&server), 300, 100);
    let result = fx.quote(&quote_request(100_000, Currency::USD), &key(3)).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::Timeout)));
    assert_eq!(received(&server, "POST").await.len(), 1, "not sent again");
    assert_eq!(fx.quote_by_id(&QuoteId::parse("q-3").expect("id")).await, Ok(Some(expected_quote("q-3"))));
    assert_eq!(received(&server, "GET").await.len(), 2, "asked again after the timeout");
}

#[tokio::test]
async fn an_answer_outside_the_contract_is_unknown() {
    let mut other_amount = quote_json("q-4");
    other_amount["source"]["amount"] = json!("999.00");
    let mut other_pair = quote_json("q-4");
    other_pair["target_currency"] = json!("GBP");
    let mut zero_rate = quote_json("q-4");
    zero_rate["rate"] = json!("0");
    let mut float_rate = quote_json("q-4");
    float_rate["rate"] = json!(1.0842);
    let mut float_amount = quote_json("q-4");
    float_amount["fee"]["amount"] = json!(4.5);
    let mut no_expiry = quote_json("q-4");
    no_expiry.as_object_mut().expect("object").remove("expires_at");
    let mut dots = quote_json("q-4");
    dots["id"] = json!("..");
    let bodies = [other_amount, other_pair, zero_rate, float_rate, float_amount, no_expiry, dots, json!("q-4")];
    for body in bodies {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(answer(201, &body)).mount(&server).await;
        let result = fx(&base(&server)).quote(&quote_request(100_000, Currency::USD), &key(4)).await;
        assert_eq!(result, Err(CallError::Unknown(Unknown::MalformedAnswer)), "{body}");
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_raw("not json", "application/json"))
        .mount(&server)
        .await;
    Mock::given(method("GET")).respond_with(answer(200, &quote_json("q-other"))).mount(&server).await;
    let fx = fx(&base(&server));
    let result = fx.quote(&quote_request(100_000, Currency::USD), &key(4)).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::MalformedAnswer)));
    let by_id = fx.quote_by_id(&QuoteId::parse("q-4").expect("id")).await;
    assert_eq!(by_id, Err(CallError::Unknown(Unknown::MalformedAnswer)), "a quote of another id");
}

#[tokio::test]
async fn a_quote_not_found_is_none_only_with_the_contracts_problem_type() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fx/quotes/q-5"))
        .respond_with(problem(404, PROBLEM_QUOTE_NOT_FOUND, None))
        .mount(&server)
        .await;
    let fx = fx(&base(&server));
    assert_eq!(fx.quote_by_id(&QuoteId::parse("q-5").expect("id")).await, Ok(None));
    // A 404 without the contract's type (a wrong path) is no proof that there is no quote.
    let result = fx.quote_by_id(&QuoteId::parse("q-6").expect("id")).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::MalformedAnswer)));
    // An id of only dots would be no path segment: it is no quote id at all.
    assert!(QuoteId::parse("..").is_err());
    assert_eq!(received(&server, "GET").await.len(), 2);
}

#[tokio::test]
async fn no_connection_is_not_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let fx = fx(&format!("http://{addr}/"));
    let result = fx.quote(&quote_request(100_000, Currency::USD), &key(7)).await;
    assert_eq!(result, Err(CallError::NotSent(NotSent::NoConnection)));
    let by_id = fx.quote_by_id(&QuoteId::parse("q-7").expect("id")).await;
    assert_eq!(by_id, Err(CallError::NotSent(NotSent::NoConnection)));
}

#[tokio::test]
async fn the_breaker_opens_and_fails_fast() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(502)).mount(&server).await;
    let (fx, _) = fx_with(&base(&server), 2_000, 3);
    let result = fx.quote(&quote_request(100_000, Currency::USD), &key(8)).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::ServerError { status: 502 })));
    assert_eq!(fx.breaker().state(), BreakerState::Open);
    let result = fx.quote(&quote_request(100_000, Currency::USD), &key(8)).await;
    assert_eq!(result, Err(CallError::NotSent(NotSent::CircuitOpen)));
    let by_id = fx.quote_by_id(&QuoteId::parse("q-8").expect("id")).await;
    assert_eq!(by_id, Err(CallError::NotSent(NotSent::CircuitOpen)));
    assert_eq!(received(&server, "POST").await.len(), 3, "nothing reached the provider while open");
}
