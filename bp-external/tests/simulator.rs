//! The real adapter against the real simulator, over loopback HTTP: the amount rules (accept,
//! reject with AC04, pending then settled), idempotent resubmission (one order per key, the
//! same answer), a key reused for another order, a timeout reconciled by a status query, the
//! status webhooks and an incoming payment, both verified by `WebhookVerifier`.

mod common;

use std::time::Duration;

use bp_core::external::{CallError, ExternalAccount, PaymentRail, RailAnswer, RailStatus, ReasonCode, Unknown};
use bp_core::{Currency, Money};
use bp_external::simulator::{IncomingPayment, OutcomeRules, Simulator, SimulatorConfig, SimulatorHandle};
use bp_external::webhook::{TOLERANCE_S_DEFAULT, WebhookVerifier};
use bp_external::{HttpRail, HttpRailConfig};
use common::{key, order, rail_with, secret, url};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SETTLE_MS: u64 = 1_000;

fn config() -> SimulatorConfig {
    let mut config = SimulatorConfig::new(secret(9), 42);
    config.rules = OutcomeRules {
        reject_cents: 13,
        reject_reason: ReasonCode::closed_account(),
        pending_from_minor: 1_000_000,
        settle_after_ms: SETTLE_MS,
    };
    config
}

fn real_rail(sim: &SimulatorHandle) -> HttpRail {
    HttpRail::new(HttpRailConfig::new(sim.base_url())).expect("rail")
}

fn verifier() -> WebhookVerifier {
    WebhookVerifier::new(vec![secret(9)], TOLERANCE_S_DEFAULT).expect("verifier")
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Waits (up to 5 s) until `server` has received `n` POSTs to `at`.
async fn posts(server: &MockServer, at: &str, n: usize) -> Vec<Request> {
    for _ in 0..100 {
        let got: Vec<Request> =
            server.received_requests().await.expect("recording").into_iter().filter(|r| r.url.path() == at).collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} deliveries to {at} expected");
}

#[tokio::test]
async fn the_amount_rules_decide_and_orders_settle_after_the_delay() {
    let sim = Simulator::start(config()).await.expect("simulator");
    let rail = real_rail(&sim);
    let ac04 = Some(ReasonCode::closed_account());
    assert_eq!(rail.submit(&order(10_000), &key(1)).await, Ok(RailAnswer::Accepted));
    assert_eq!(rail.submit(&order(1_213), &key(2)).await, Ok(RailAnswer::Rejected { reason: ac04.clone() }));
    assert_eq!(rail.submit(&order(1_000_000), &key(3)).await, Ok(RailAnswer::Pending));
    assert_eq!(rail.status(&key(3)).await, Ok(RailStatus::Known { answer: RailAnswer::Pending }));
    assert_eq!(rail.status(&key(4)).await, Ok(RailStatus::NotFound), "never sent");
    tokio::time::sleep(Duration::from_millis(SETTLE_MS + 100)).await;
    assert_eq!(rail.status(&key(1)).await, Ok(RailStatus::Known { answer: RailAnswer::Settled }));
    assert_eq!(rail.status(&key(3)).await, Ok(RailStatus::Known { answer: RailAnswer::Settled }));
    assert_eq!(rail.status(&key(2)).await, Ok(RailStatus::Known { answer: RailAnswer::Rejected { reason: ac04 } }));
    sim.stop().await;
}

#[tokio::test]
async fn the_same_key_twice_is_one_order_and_another_order_under_it_conflicts() {
    let sim = Simulator::start(config()).await.expect("simulator");
    let rail = real_rail(&sim);
    assert_eq!(rail.submit(&order(10_000), &key(1)).await, Ok(RailAnswer::Accepted));
    // Sent again later (a new message, made at another time): the same order, the same answer.
    tokio::time::sleep(Duration::from_millis(SETTLE_MS + 100)).await;
    assert_eq!(rail.submit(&order(10_000), &key(1)).await, Ok(RailAnswer::Accepted));
    assert_eq!((sim.orders_len(), sim.order_posts()), (1, 2));
    let conflict = rail.submit(&order(20_000), &key(1)).await;
    assert_eq!(conflict, Err(CallError::Unknown(Unknown::MalformedAnswer)), "never Refused: the key has an order");
    assert_eq!(sim.orders_len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_status_query_finds_the_order() {
    let mut config = config();
    config.answer_delay_ms = 1_000;
    let sim = Simulator::start(config).await.expect("simulator");
    let (rail, _) = rail_with(sim.base_url().as_str(), 300, 100);
    assert_eq!(rail.submit(&order(10_000), &key(1)).await, Err(CallError::Unknown(Unknown::Timeout)));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let status = rail.status(&key(1)).await;
    assert!(
        matches!(status, Ok(RailStatus::Known { answer: RailAnswer::Accepted | RailAnswer::Settled })),
        "{status:?}"
    );
    assert_eq!((sim.orders_len(), sim.order_posts()), (1, 1), "one order");
    sim.stop().await;
}

#[tokio::test]
async fn every_status_is_pushed_as_a_signed_webhook() {
    let bank = MockServer::start().await;
    // The bank's endpoint fails once: the simulator delivers again, signed again.
    Mock::given(method("POST"))
        .and(path("/rail/webhooks"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&bank)
        .await;
    Mock::given(method("POST")).and(path("/rail/webhooks")).respond_with(ResponseTemplate::new(204)).mount(&bank).await;
    let mut config = config();
    config.webhook_url = Some(url(&format!("{}/rail/webhooks", bank.uri())));
    config.webhook_back_off = bp_core::external::BackOff { first_ms: 10, max_ms: 50 };
    let sim = Simulator::start(config).await.expect("simulator");
    let rail = real_rail(&sim);
    assert_eq!(rail.submit(&order(10_000), &key(1)).await, Ok(RailAnswer::Accepted));
    let deliveries = posts(&bank, "/rail/webhooks", 3).await;
    let v = verifier();
    let mut answers = Vec::new();
    for d in &deliveries {
        let signature = d.headers.get("Rail-Signature").and_then(|h| h.to_str().ok());
        let report = v.status_report(signature, &d.body, now_unix()).expect("authentic");
        answers.push(report.answer_for(&key(1)).expect("about our order"));
    }
    assert_eq!(
        answers,
        [RailAnswer::Accepted, RailAnswer::Accepted, RailAnswer::Settled],
        "first refused, redelivered"
    );
    assert_ne!(deliveries[0].headers.get("Rail-Signature"), deliveries[1].headers.get("Rail-Signature"));
    let replay = deliveries[2].headers.get("Rail-Signature").and_then(|h| h.to_str().ok());
    assert!(v.status_report(replay, &deliveries[2].body, now_unix()).is_err(), "a replay is refused");
    sim.stop().await;
}

#[tokio::test]
async fn an_incoming_payment_is_signed_and_reads_as_a_credit_to_our_iban() {
    let bank = MockServer::start().await;
    Mock::given(method("POST")).and(path("/rail/incoming")).respond_with(ResponseTemplate::new(200)).mount(&bank).await;
    let mut config = config();
    config.incoming_url = Some(url(&format!("{}/rail/incoming", bank.uri())));
    let sim = Simulator::start(config).await.expect("simulator");
    let payee = ExternalAccount::parse("IT60X0542811101000000123456", "Ada Lovelace", None).expect("payee");
    let payer = ExternalAccount::parse("DE89370400440532013000", "Bob", None).expect("payer");
    let payment = IncomingPayment {
        amount: Money::new(4_250, Currency::EUR),
        payer,
        payee: payee.clone(),
        remittance: Some("rent".to_owned()),
    };
    let delivered = sim.originate_incoming(payment).await.expect("delivered");
    assert_eq!(delivered.status, 200);
    let [d] = <[Request; 1]>::try_from(posts(&bank, "/rail/incoming", 1).await).expect("one delivery");
    let signature = d.headers.get("Rail-Signature").and_then(|h| h.to_str().ok());
    let transfer = verifier().incoming(signature, &d.body, now_unix()).expect("authentic");
    let credit = transfer.transactions[0].incoming();
    assert_eq!(credit.creditor_iban, payee.iban);
    assert_eq!(credit.amount, Money::new(4_250, Currency::EUR));
    assert_eq!(credit.end_to_end_id, delivered.key.as_str());
    assert_eq!(credit.debtor_agent.as_ref().map(|b| b.as_str()), Some("SIMUDEFFXXX"));
    assert_eq!(credit.remittance.as_deref(), Some("rent"));
    let forged = String::from_utf8(d.body.clone()).expect("utf8").replace("42.50", "4250.00");
    assert!(verifier().incoming(signature, forged.as_bytes(), now_unix()).is_err(), "a changed amount is refused");
    sim.stop().await;
}

#[tokio::test]
async fn the_same_seed_replays_the_same_ids() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let bank = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&bank).await;
        let mut config = config();
        config.incoming_url = Some(url(&format!("{}/in", bank.uri())));
        let sim = Simulator::start(config).await.expect("simulator");
        let payment = IncomingPayment {
            amount: Money::new(100, Currency::EUR),
            payer: ExternalAccount::parse("DE89370400440532013000", "Bob", None).expect("payer"),
            payee: ExternalAccount::parse("IT60X0542811101000000123456", "Ada", None).expect("payee"),
            remittance: None,
        };
        ids.push(sim.originate_incoming(payment).await.expect("delivered").key);
        sim.stop().await;
    }
    assert_eq!(ids[0], ids[1]);
}
