//! The simulated FX provider: quotes from a fixed table of rates from the euro (and their
//! inverses to the euro), with a fee of 0.45% of the amount converted (at least one unit of
//! its currency), valid for [`FxRules::quote_ttl_s`]. Every quote is kept by id, and a quote
//! asked again under the same key is the same quote.
//!
//! - `POST /fx/quotes` ([`QuoteAsk`], `Idempotency-Key`): `201` with a new quote; the same key
//!   and ask again: `200` with the very same quote; the same key with another ask: `409`
//!   key-conflict; a pair without a rate (another pair than the euro to or from one of
//!   [`FX_RATES_FROM_EUR`]): `422` refused, `AM03`; an amount that is not positive: `422`
//!   refused, `AM12`; an unreadable ask or key: `400` refused, `FF01`.
//! - `GET /fx/quotes/{id}`: `200` with the quote as it was given (expired or not: the bank
//!   checks the expiry), or `404` quote-not-found.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use bp_core::clock::Clock;
use bp_core::external::CallKey;
use bp_core::external::fx::QuoteId;
use bp_core::money::{Currency, Money};
use bp_core::rate::Rate;
use chrono::TimeDelta;

use super::{Shared, idempotency_key, json, problem};
use crate::contract::fx::{
    PROBLEM_KEY_CONFLICT, PROBLEM_QUOTE_NOT_FOUND, PROBLEM_REFUSED, QUOTES_PATH, Quote, QuoteAsk,
};

/// The rates the simulator quotes from the euro: units of the currency per euro.
pub const FX_RATES_FROM_EUR: [(Currency, &str); 4] =
    [(Currency::USD, "1.0842"), (Currency::GBP, "0.8571"), (Currency::CHF, "0.9437"), (Currency::JPY, "161.235")];

/// Decimals of a rate to the euro: the inverse of the table's rate, rounded half-even.
pub const INVERSE_RATE_DECIMALS: u32 = 6;

/// The fee: this fraction of the amount converted, rounded half-even to its minor unit, at
/// least one unit of its currency (1.00, ¥1).
pub const FX_FEE_RATE: &str = "0.0045";

/// The longest quote validity the simulator gives, in seconds (a day).
pub const QUOTE_TTL_S_MAX: u64 = 86_400;

/// How the simulated FX provider quotes: from the rates of [`FX_RATES_FROM_EUR`] (and their
/// inverses to the euro, to [`INVERSE_RATE_DECIMALS`] decimals, no other pair), with a fee of
/// [`FX_FEE_RATE`] (at least one unit of the source currency); every quote kept by id, the
/// same key giving the same quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxRules {
    /// How long a quote is valid, in seconds (at most [`QUOTE_TTL_S_MAX`]; more is cut to it).
    pub quote_ttl_s: u64,
}

impl Default for FxRules {
    /// Quotes valid for 60 s.
    fn default() -> Self {
        Self { quote_ttl_s: 60 }
    }
}

/// The quotes given: by id, and the id given under each key with what was asked.
#[derive(Debug, Default)]
pub(super) struct Desk {
    by_key: HashMap<CallKey, (QuoteAsk, QuoteId)>,
    by_id: HashMap<QuoteId, Quote>,
}

impl Desk {
    /// How many quotes it keeps.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

pub(super) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(&format!("/{QUOTES_PATH}"), post(quote))
        .route(&format!("/{QUOTES_PATH}/{{id}}"), get(quote_by_id))
        .with_state(shared)
}

/// The rate from `from` to `to`: the table's from the euro, its inverse to the euro, none
/// between two other currencies.
pub fn rate(from: Currency, to: Currency) -> Option<Rate> {
    let from_eur = |c: Currency| FX_RATES_FROM_EUR.iter().find(|(t, _)| *t == c).and_then(|(_, r)| Rate::parse(r).ok());
    match (from, to) {
        (Currency::EUR, to) => from_eur(to),
        (from, Currency::EUR) => from_eur(from).and_then(inverse),
        _ => None,
    }
}

/// `1 / rate`, rounded half-even to [`INVERSE_RATE_DECIMALS`] decimals.
fn inverse(rate: Rate) -> Option<Rate> {
    let places = 10_u128.pow(INVERSE_RATE_DECIMALS);
    let numerator = 10_u128.pow(u32::from(Rate::SCALE)) * places;
    let units = u128::from(rate.units());
    let (q, r) = (numerator.checked_div(units)?, numerator % units);
    let q = match (2 * r).cmp(&units) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
        std::cmp::Ordering::Less => q,
    };
    let digits = usize::try_from(INVERSE_RATE_DECIMALS).ok()?;
    Rate::parse(&format!("{}.{:0digits$}", q / places, q % places)).ok()
}

/// The fee of converting `source` ([`FX_FEE_RATE`]); `None` on overflow.
pub fn fee(source: Money) -> Option<Money> {
    let rate = Rate::parse(FX_FEE_RATE).ok()?;
    let fee = rate.mul_money_half_even(source, 1, NonZeroU32::MIN).ok()?;
    let floor = 10_i64.checked_pow(u32::from(source.currency().exponent()))?;
    Some(Money::new(fee.amount_minor().max(floor), source.currency()))
}

fn refused(status: StatusCode, reason: &str, title: &str) -> Response {
    problem(status, PROBLEM_REFUSED, title, Some(reason))
}

/// Gives a quote, then answers after `answer_delay_ms` (the quote is kept either way).
async fn quote(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = give_quote(&shared, &headers, &body);
    shared.answer_delay().await;
    answer
}

fn give_quote(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(key) = idempotency_key(headers) else {
        return refused(StatusCode::BAD_REQUEST, "FF01", "an Idempotency-Key of 1 to 35 letters, digits or '-'");
    };
    let Ok(ask) = serde_json::from_slice::<QuoteAsk>(body) else {
        return refused(StatusCode::BAD_REQUEST, "FF01", "not a quote request");
    };
    if !ask.source.is_positive() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "AM12", "the amount to convert must be positive");
    }
    let Some(rate) = rate(ask.source.currency(), ask.target_currency) else {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "AM03", "no rate for this pair");
    };
    let Some(fee) = fee(ask.source) else {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "AM12", "the amount is too large");
    };
    let mut desk = shared.fx.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((asked, id)) = desk.by_key.get(&key) {
        if *asked != ask {
            return problem(StatusCode::CONFLICT, PROBLEM_KEY_CONFLICT, "key used for another quote", None);
        }
        return match desk.by_id.get(id) {
            Some(q) => json(StatusCode::OK, q),
            None => problem(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", "quote lost", None),
        };
    }
    if desk.len() >= shared.config.orders_max {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "about:blank", "too many quotes", None);
    }
    let id = loop {
        let id = QuoteId::parse(&format!("FXQ-{:016X}", shared.random_u64()))
            .unwrap_or_else(|_| unreachable!("FXQ- and hex is an id"));
        if !desk.by_id.contains_key(&id) {
            break id;
        }
    };
    let ttl_s = shared.config.fx.quote_ttl_s.min(QUOTE_TTL_S_MAX);
    let ttl = TimeDelta::seconds(i64::try_from(ttl_s).unwrap_or_else(|_| unreachable!("at most a day")));
    let quote = Quote {
        id: id.clone(),
        source: ask.source,
        target_currency: ask.target_currency,
        rate,
        fee,
        expires_at: shared.clock.now() + ttl,
    };
    desk.by_key.insert(key, (ask, id.clone()));
    desk.by_id.insert(id, quote.clone());
    json(StatusCode::CREATED, &quote)
}

async fn quote_by_id(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let not_found = || problem(StatusCode::NOT_FOUND, PROBLEM_QUOTE_NOT_FOUND, "no such quote", None);
    let Ok(id) = QuoteId::parse(&id) else { return not_found() };
    let quote = shared.fx.lock().unwrap_or_else(PoisonError::into_inner).by_id.get(&id).cloned();
    match quote {
        Some(q) => json(StatusCode::OK, &q),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_quotes_from_the_euro_and_its_inverse_to_it() {
        let r = |s: &str| Rate::parse(s).expect("rate");
        assert_eq!(rate(Currency::EUR, Currency::USD), Some(r("1.0842")));
        assert_eq!(rate(Currency::EUR, Currency::JPY), Some(r("161.235")));
        // 1 / 1.0842 = 0.92233905…; 1 / 0.8571 = 1.16672500…; 1 / 161.235 = 0.00620212…
        assert_eq!(rate(Currency::USD, Currency::EUR), Some(r("0.922339")));
        assert_eq!(rate(Currency::GBP, Currency::EUR), Some(r("1.166725")));
        assert_eq!(rate(Currency::JPY, Currency::EUR), Some(r("0.006202")));
        assert_eq!(rate(Currency::USD, Currency::GBP), None, "no cross rates");
        assert_eq!(rate(Currency::EUR, Currency::KWD), None);
        assert_eq!(rate(Currency::EUR, Currency::EUR), None);
    }

    #[test]
    fn the_fee_is_a_share_of_the_amount_with_a_floor_of_one_unit() {
        let eur = |minor| Money::new(minor, Currency::EUR);
        assert_eq!(fee(eur(100_000)), Some(eur(450)), "0.45% of 1,000.00");
        assert_eq!(fee(eur(123_456)), Some(eur(556)), "555.552 → 5.56");
        assert_eq!(fee(eur(10_000)), Some(eur(100)), "0.45 is under the floor of 1.00");
        assert_eq!(fee(Money::new(1_000_000, Currency::JPY)), Some(Money::new(4_500, Currency::JPY)));
        assert_eq!(fee(Money::new(10, Currency::JPY)), Some(Money::new(1, Currency::JPY)));
    }
}
