//! The real FX and loan adapters against the real simulator over loopback HTTP: quotes from
//! the rate table with their fee and expiry, kept by id, the same key giving the same quote;
//! loan decisions by amount, term and purpose, one per key, found again by status after a
//! timeout; and the correspondent rail carrying other currencies than the euro on its own
//! path, while the SEPA rail stays euro-only.

mod common;

use std::time::Duration;

use bp_core::external::fx::{FxProvider, FxQuote, QuoteId, check_accepted};
use bp_core::external::loan::{DecisionStatus, LoanDecision, LoanProvider};
use bp_core::external::{CallError, PaymentRail, RailAnswer, RailId, RailStatus, ReasonCode, Refusal, Unknown};
use bp_core::rate::Rate;
use bp_core::{Currency, Money};
use bp_external::simulator::{FxRules, Simulator, SimulatorConfig, SimulatorHandle};
use bp_external::{HttpFxProvider, HttpLoanProvider, HttpPartyConfig, HttpRail, HttpRailConfig};
use chrono::TimeDelta;
use common::{application, key, order, party_config, quote_request, secret, url};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn config() -> SimulatorConfig {
    SimulatorConfig::new(secret(9), 42)
}

fn real_fx(sim: &SimulatorHandle) -> HttpFxProvider {
    HttpFxProvider::new(HttpPartyConfig::new(sim.base_url())).expect("fx")
}

fn real_loans(sim: &SimulatorHandle) -> HttpLoanProvider {
    HttpLoanProvider::new(HttpPartyConfig::new(sim.base_url())).expect("loans")
}

fn rail(sim: &SimulatorHandle, rail: RailId) -> HttpRail {
    HttpRail::new(HttpRailConfig::for_rail(rail, sim.rail_base_url(rail))).expect("rail")
}

fn refused(code: &str) -> CallError {
    CallError::Refused(Refusal { code: Some(ReasonCode::parse(code).expect("code")) })
}

#[tokio::test]
async fn a_quote_comes_from_the_table_with_its_fee_and_expiry_and_is_kept_by_id() {
    let sim = Simulator::start(config()).await.expect("simulator");
    let fx = real_fx(&sim);
    let before = chrono::Utc::now();
    let quote = fx.quote(&quote_request(100_000, Currency::USD), &key(1)).await.expect("a quote");
    assert_eq!(quote.source, Money::new(100_000, Currency::EUR));
    assert_eq!(quote.target_currency, Currency::USD);
    assert_eq!(quote.rate, Rate::parse("1.0842").expect("rate"));
    assert_eq!(quote.fee, Money::new(450, Currency::EUR), "0.45% of 1,000.00");
    let ttl = quote.expires_at - before;
    assert!(ttl > TimeDelta::seconds(59) && ttl <= TimeDelta::seconds(61), "{ttl}");
    // bp-core takes it as offered: 1,000.00 × 1.0842 = 1,084.20 USD, 1,004.50 EUR debited.
    let offered = FxQuote::of(&quote).expect("a valid quote");
    assert_eq!(offered.target, Money::new(108_420, Currency::USD));
    assert_eq!(offered.debit, Money::new(100_450, Currency::EUR));
    // Read back by id, it is exactly the quote given: the customer may accept it.
    let kept = fx.quote_by_id(&quote.id).await.expect("read");
    assert_eq!(kept.as_ref(), Some(&quote));
    assert_eq!(check_accepted(&offered, kept.as_ref(), chrono::Utc::now()), Ok(()));
    assert_eq!(fx.quote_by_id(&QuoteId::parse("FXQ-NEVER-GIVEN").expect("id")).await, Ok(None));
    sim.stop().await;
}

#[tokio::test]
async fn the_same_key_is_the_same_quote_and_another_ask_under_it_conflicts() {
    let sim = Simulator::start(config()).await.expect("simulator");
    let fx = real_fx(&sim);
    let first = fx.quote(&quote_request(100_000, Currency::GBP), &key(1)).await.expect("a quote");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = fx.quote(&quote_request(100_000, Currency::GBP), &key(1)).await.expect("the quote");
    assert_eq!(again, first, "the same id, rate, fee and expiry");
    let other = fx.quote(&quote_request(100_000, Currency::GBP), &key(2)).await.expect("another quote");
    assert_ne!(other.id, first.id);
    assert!(other.expires_at > first.expires_at);
    let conflict = fx.quote(&quote_request(200_000, Currency::GBP), &key(1)).await;
    assert_eq!(conflict, Err(CallError::Unknown(Unknown::MalformedAnswer)), "never Refused: the key has a quote");
    assert_eq!(sim.quotes_len(), 2);
    sim.stop().await;
}

#[tokio::test]
async fn pairs_without_a_rate_and_amounts_that_are_not_positive_are_refused() {
    let sim = Simulator::start(config()).await.expect("simulator");
    let fx = real_fx(&sim);
    assert_eq!(fx.quote(&quote_request(100_000, Currency::KWD), &key(1)).await, Err(refused("AM03")));
    assert_eq!(fx.quote(&quote_request(0, Currency::USD), &key(2)).await, Err(refused("AM12")));
    let cross = bp_core::external::fx::QuoteRequest {
        source: Money::new(100_000, Currency::USD),
        target_currency: Currency::GBP,
    };
    assert_eq!(fx.quote(&cross, &key(3)).await, Err(refused("AM03")), "no cross rates");
    // The inverse direction: dollars to euro at 1 / 1.0842, rounded to 6 decimals.
    let back = bp_core::external::fx::QuoteRequest {
        source: Money::new(100_000, Currency::USD),
        target_currency: Currency::EUR,
    };
    let quote = fx.quote(&back, &key(4)).await.expect("a quote");
    assert_eq!(quote.rate, Rate::parse("0.922339").expect("rate"));
    assert_eq!(quote.fee, Money::new(450, Currency::USD));
    assert_eq!(sim.quotes_len(), 1, "refusals keep nothing");
    sim.stop().await;
}

#[tokio::test]
async fn the_quote_validity_is_configured() {
    let mut config = config();
    config.fx = FxRules { quote_ttl_s: 5 };
    let sim = Simulator::start(config).await.expect("simulator");
    let before = chrono::Utc::now();
    let quote = real_fx(&sim).quote(&quote_request(5_000, Currency::JPY), &key(1)).await.expect("a quote");
    let ttl = quote.expires_at - before;
    assert!(ttl > TimeDelta::seconds(4) && ttl <= TimeDelta::seconds(6), "{ttl}");
    assert_eq!(quote.fee, Money::new(100, Currency::EUR), "0.225 is under the floor of 1.00");
    let offered = FxQuote::of(&quote).expect("valid");
    assert_eq!(offered.target, Money::new(8_062, Currency::JPY), "50.00 × 161.235 = 8,061.75 → ¥8,062");
    sim.stop().await;
}

#[tokio::test]
async fn loans_are_decided_by_amount_term_and_purpose_once_per_key() {
    let sim = Simulator::start(config()).await.expect("simulator");
    let loans = real_loans(&sim);
    let approved = LoanDecision::Approved {
        annual_rate: Rate::parse("0.059").expect("rate"),
        fee: Money::new(10_000, Currency::EUR),
        term_months: 24,
    };
    assert_eq!(loans.decide(&application(1_000_000, 24, "a car"), &key(1)).await, Ok(approved.clone()));
    let capped = LoanDecision::Approved {
        annual_rate: Rate::parse("0.049").expect("rate"),
        fee: Money::new(50_000, Currency::EUR),
        term_months: 12,
    };
    assert_eq!(loans.decide(&application(5_000_000, 12, "a roof"), &key(2)).await, Ok(capped));
    let declined = |c: &str| Ok(LoanDecision::Declined { reason: Some(ReasonCode::parse(c).expect("code")) });
    assert_eq!(loans.decide(&application(5_000_001, 12, "a boat"), &key(3)).await, declined("AM02"));
    assert_eq!(loans.decide(&application(100_000, 12, "Decline me"), &key(4)).await, declined("MS03"));
    assert_eq!(loans.decide(&application(100_000, 0, "now"), &key(5)).await, Err(refused("FF01")));
    // Asked again under the same key: the first decision, not a second one.
    assert_eq!(loans.decide(&application(1_000_000, 24, "a car"), &key(1)).await, Ok(approved.clone()));
    let conflict = loans.decide(&application(2_000_000, 24, "a car"), &key(1)).await;
    assert_eq!(conflict, Err(CallError::Unknown(Unknown::MalformedAnswer)), "never Refused: the key has a decision");
    assert_eq!(loans.status(&key(1)).await, Ok(DecisionStatus::Known { decision: approved }));
    assert_eq!(loans.status(&key(5)).await, Ok(DecisionStatus::NotFound), "a refusal keeps nothing");
    assert_eq!(sim.decisions_len(), 4);
    sim.stop().await;
}

#[tokio::test]
async fn a_slow_decision_times_out_and_the_status_query_finds_it() {
    let mut config = config();
    config.answer_delay_ms = 1_000;
    let sim = Simulator::start(config).await.expect("simulator");
    let loans = HttpLoanProvider::new(party_config(sim.base_url().as_str(), 300, 100)).expect("loans");
    let result = loans.decide(&application(1_000_000, 24, "a car"), &key(1)).await;
    assert_eq!(result, Err(CallError::Unknown(Unknown::Timeout)));
    let status = loans.status(&key(1)).await;
    assert!(matches!(status, Ok(DecisionStatus::Known { decision: LoanDecision::Approved { .. } })), "{status:?}");
    assert_eq!(sim.decisions_len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn the_correspondent_rail_carries_other_currencies_on_its_own_path() {
    let bank = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&bank).await;
    let mut config = config();
    config.correspondent_webhook_url = Some(url(&format!("{}/rail/correspondent/webhooks", bank.uri())));
    let sim = Simulator::start(config).await.expect("simulator");
    assert_eq!(sim.rail_base_url(RailId::SepaCreditTransfer), sim.base_url());
    assert_eq!(sim.rail_base_url(RailId::Correspondent).path(), "/correspondent/");
    let correspondent = rail(&sim, RailId::Correspondent);
    let sepa = rail(&sim, RailId::SepaCreditTransfer);
    let mut in_dollars = order(10_000);
    in_dollars.amount = Money::new(108_420, Currency::USD);
    assert_eq!(correspondent.submit(&in_dollars, &key(1)).await, Ok(RailAnswer::Accepted));
    assert_eq!(correspondent.status(&key(1)).await, Ok(RailStatus::Known { answer: RailAnswer::Accepted }));
    // Each rail keeps its own orders: SEPA never received this one.
    assert_eq!(sepa.status(&key(1)).await, Ok(RailStatus::NotFound));
    assert_eq!(sim.rail_orders_len(RailId::Correspondent), 1);
    assert_eq!(sim.rail_orders_len(RailId::SepaCreditTransfer), 0);
    // The adapter of the SEPA rail refuses dollars before sending anything.
    assert_eq!(sepa.submit(&in_dollars, &key(2)).await, Err(refused("AM03")));
    // A correspondent adapter pointed at the SEPA path: the simulated SEPA rail refuses them.
    let misrouted = HttpRail::new(HttpRailConfig::for_rail(RailId::Correspondent, sim.base_url())).expect("rail");
    assert_eq!(misrouted.submit(&in_dollars, &key(3)).await, Err(refused("AM03")));
    assert_eq!(sim.orders_len(), 1);
    // The status went to the correspondent's webhook URL.
    let deliveries = wait_for(&bank, "/rail/correspondent/webhooks").await;
    assert!(deliveries[0].headers.get("Rail-Signature").is_some());
    sim.stop().await;
}

/// Waits (up to 5 s) until `server` has received a POST to `at`.
async fn wait_for(server: &MockServer, at: &str) -> Vec<Request> {
    for _ in 0..100 {
        let got: Vec<Request> =
            server.received_requests().await.expect("recording").into_iter().filter(|r| r.url.path() == at).collect();
        if !got.is_empty() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a delivery to {at} expected");
}
