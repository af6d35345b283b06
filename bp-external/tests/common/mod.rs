//! Fixtures shared by the adapter's tests: an order, keys, pacs.002 reports and a rail
//! configured for fast tests.

#![allow(dead_code)]

use std::sync::Arc;

use bp_core::clock::ManualClock;
use bp_core::external::{BackOff, CallKey, ExternalAccount, RailOrder, ReasonCode};
use bp_core::iso20022::pacs002::{self, NewStatusReport, Reported, Status};
use bp_core::random::SeededRandomness;
use bp_core::{Currency, Money};
use bp_external::{BreakerConfig, HttpRail, HttpRailConfig, WebhookSecret};
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
