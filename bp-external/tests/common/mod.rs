//! Fixtures shared by the adapters' tests: an order, keys, pacs.002 reports, a quote request,
//! a loan application, and a rail, an FX provider and a loan provider configured for fast
//! tests.

#![allow(dead_code)]

use std::sync::Arc;

use bp_core::clock::ManualClock;
use bp_core::external::fx::QuoteRequest;
use bp_core::external::loan::LoanApplication;
use bp_core::external::{BackOff, CallKey, ExternalAccount, RailOrder, ReasonCode};
use bp_core::ids::CustomerId;
use bp_core::iso20022::pacs002::{self, NewStatusReport, Reported, Status};
use bp_core::random::SeededRandomness;
use bp_core::{Currency, Money};
use bp_external::{
    BreakerConfig, HttpFxProvider, HttpLoanProvider, HttpPartyConfig, HttpRail, HttpRailConfig, WebhookSecret,
};
use chrono::TimeZone;
use reqwest::Url;

pub fn at() -> bp_core::Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 9, 30, 0).single().expect("time")
}

pub fn order(amount_minor: i64) -> RailOrder {
    RailOrder {
        amount: Money::new(amount_minor, Currency::EUR),
        debtor: ExternalAccount::parse("IT60X0542811101000000123456", "Ada Lovelace", Some("BPBKITMMXXX"))
            .expect("debtor"),
        creditor: ExternalAccount::parse("DE89370400440532013000", "Bob & Söhne", Some("COBADEFFXXX"))
            .expect("creditor"),
        remittance: Some("invoice 42".to_owned()),
        requested_at: at(),
    }
}

pub fn key(n: u32) -> CallKey {
    CallKey::parse(&format!("0190c0de00007000800000000000{n:04}")).expect("key")
}

/// A pacs.002 reporting `status` (with `reason`) for `key`.
pub fn report(key: &CallKey, status: Status, reason: Option<&str>) -> String {
    let reason = reason.map(|r| ReasonCode::parse(r).expect("code"));
    let new = NewStatusReport::for_key(key, "R-1".to_owned(), at(), Reported { status, reason });
    pacs002::build(&new).expect("report")
}

/// A rail at `base` answering within `request_timeout_ms`, 3 attempts 2–10 ms apart, a
/// breaker opening after `failures_max` failures for 1 s, on a manual clock.
pub fn rail_with(base: &str, request_timeout_ms: u64, failures_max: u32) -> (HttpRail, Arc<ManualClock>) {
    let mut config = HttpRailConfig::new(Url::parse(base).expect("url"));
    config.connect_timeout_ms = 1_000;
    config.request_timeout_ms = request_timeout_ms;
    config.retry_back_off = BackOff { first_ms: 2, max_ms: 10 };
    config.breaker = BreakerConfig { failures_max, cool_down_ms: 1_000 };
    let clock = Arc::new(ManualClock::new(at()));
    let rail =
        HttpRail::with_clock_and_random(config, clock.clone(), Arc::new(SeededRandomness::new(7))).expect("rail");
    (rail, clock)
}

pub fn rail(base: &str) -> HttpRail {
    rail_with(base, 2_000, 100).0
}

pub fn secret(byte: u8) -> WebhookSecret {
    WebhookSecret::new(vec![byte; 32]).expect("secret")
}

pub fn unix(t: bp_core::Timestamp) -> i64 {
    t.timestamp()
}

pub fn url(u: &str) -> Url {
    Url::parse(u).expect("url")
}

/// A party at `base` answering within `request_timeout_ms`, 3 attempts 2–10 ms apart, a
/// breaker opening after `failures_max` failures for 1 s.
pub fn party_config(base: &str, request_timeout_ms: u64, failures_max: u32) -> HttpPartyConfig {
    HttpPartyConfig {
        connect_timeout_ms: 1_000,
        request_timeout_ms,
        retry_back_off: BackOff { first_ms: 2, max_ms: 10 },
        breaker: BreakerConfig { failures_max, cool_down_ms: 1_000 },
        ..HttpPartyConfig::new(Url::parse(base).expect("url"))
    }
}

/// An FX provider at `base` (see [`party_config`]), on a manual clock.
pub fn fx_with(base: &str, request_timeout_ms: u64, failures_max: u32) -> (HttpFxProvider, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at()));
    let config = party_config(base, request_timeout_ms, failures_max);
    let fx = HttpFxProvider::with_clock_and_random(config, clock.clone(), Arc::new(SeededRandomness::new(7)))
        .expect("fx provider");
    (fx, clock)
}

pub fn fx(base: &str) -> HttpFxProvider {
    fx_with(base, 2_000, 100).0
}

/// A loan provider at `base` (see [`party_config`]), on a manual clock.
pub fn loans_with(base: &str, request_timeout_ms: u64, failures_max: u32) -> (HttpLoanProvider, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at()));
    let config = party_config(base, request_timeout_ms, failures_max);
    let loans = HttpLoanProvider::with_clock_and_random(config, clock.clone(), Arc::new(SeededRandomness::new(7)))
        .expect("loan provider");
    (loans, clock)
}

pub fn loans(base: &str) -> HttpLoanProvider {
    loans_with(base, 2_000, 100).0
}

/// Converting `source_minor` euro cents into `target`.
pub fn quote_request(source_minor: i64, target: Currency) -> QuoteRequest {
    QuoteRequest { source: Money::new(source_minor, Currency::EUR), target_currency: target }
}

/// The applicant of [`application`].
pub fn customer() -> CustomerId {
    serde_json::from_str("\"0190c0de-0000-7000-8000-000000000042\"").expect("a customer id")
}

/// An application for `amount_minor` euro cents over `term_months`, for `purpose`.
pub fn application(amount_minor: i64, term_months: u32, purpose: &str) -> LoanApplication {
    LoanApplication {
        customer: customer(),
        amount: Money::new(amount_minor, Currency::EUR),
        term_months,
        purpose: purpose.to_owned(),
        requested_at: at(),
    }
}
