//! The simulated loan provider: decisions that follow from the application alone, so that a
//! demo and a test know the answer in advance, and one decision per key.
//!
//! - A purpose containing [`LOAN_DECLINE_WORD`] (any case) → declined, `MS03`.
//! - An amount above [`LoanRules::approve_up_to_minor`] → declined, `AM02`.
//! - Otherwise approved for the term asked, at the rate of its band ([`LOAN_RATE_BANDS`]),
//!   with a fee of [`LOAN_FEE_RATE`] of the amount (half-even), at most
//!   [`LoanRules::fee_max_minor`].
//!
//! - `POST /loans/decisions` ([`Application`], `Idempotency-Key`): `201` with the decision;
//!   the same key and application again: `200` with the very same decision; the same key with
//!   another application: `409` key-conflict; an amount that is not positive or a term outside
//!   1 to `TERM_MONTHS_MAX`: `422` refused, `FF01`; an unreadable application or key: `400`
//!   refused, `FF01`.
//! - `GET /loans/decisions/{key}`: `200` with the decision taken under the key, or `404`
//!   decision-not-found.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use bp_core::external::schedule::TERM_MONTHS_MAX;
use bp_core::external::{CallKey, ReasonCode};
use bp_core::money::Money;
use bp_core::rate::Rate;

use super::{Shared, idempotency_key, json, problem};
use crate::contract::loan::{
    Application, DECISIONS_PATH, Decision, PROBLEM_DECISION_NOT_FOUND, PROBLEM_KEY_CONFLICT, PROBLEM_REFUSED,
};

/// The annual rate by term: the first band whose longest term (in months) covers the term.
pub const LOAN_RATE_BANDS: [(u32, &str); 4] = [(12, "0.049"), (36, "0.059"), (84, "0.069"), (TERM_MONTHS_MAX, "0.079")];

/// The fee: this fraction of the principal, rounded half-even to its minor unit.
pub const LOAN_FEE_RATE: &str = "0.01";

/// A purpose containing this word (any case) is declined.
pub const LOAN_DECLINE_WORD: &str = "decline";

/// How the simulated loan provider decides, from the application alone: a purpose containing
/// [`LOAN_DECLINE_WORD`] is declined (`MS03`), an amount above `approve_up_to_minor` too
/// (`AM02`); otherwise approved for the term asked at its band's rate ([`LOAN_RATE_BANDS`]),
/// with a fee of [`LOAN_FEE_RATE`] capped at `fee_max_minor`. One decision per key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoanRules {
    /// The largest principal approved, in minor units of the loan's currency.
    pub approve_up_to_minor: i64,
    /// The largest fee, in minor units of the loan's currency.
    pub fee_max_minor: i64,
}

impl Default for LoanRules {
    /// Up to 50,000.00 approved; a fee of at most 500.00.
    fn default() -> Self {
        Self { approve_up_to_minor: 5_000_000, fee_max_minor: 50_000 }
    }
}

/// The decisions taken, by key, with the application each was taken on.
#[derive(Debug, Default)]
pub(super) struct Book(HashMap<CallKey, (Application, Decision)>);

impl Book {
    /// How many decisions it keeps.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

pub(super) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(&format!("/{DECISIONS_PATH}"), post(decide))
        .route(&format!("/{DECISIONS_PATH}/{{key}}"), get(status))
        .with_state(shared)
}

fn code(c: &str) -> ReasonCode {
    ReasonCode::parse(c).unwrap_or_else(|_| unreachable!("a valid reason code"))
}

/// The decision on `application` under `rules`, or why it is refused (reason, title).
pub fn decision(rules: &LoanRules, application: &Application) -> Result<Decision, (&'static str, &'static str)> {
    let amount = application.amount;
    if !amount.is_positive() {
        return Err(("FF01", "the amount must be positive"));
    }
    let Some(&(_, rate)) = LOAN_RATE_BANDS.iter().find(|(longest, _)| application.term_months <= *longest) else {
        return Err(("FF01", "the term is outside the provider's bands"));
    };
    if application.term_months == 0 {
        return Err(("FF01", "the term must be at least one month"));
    }
    if application.purpose.to_ascii_lowercase().contains(LOAN_DECLINE_WORD) {
        return Ok(Decision::Declined { reason: Some(code("MS03")) });
    }
    if amount.amount_minor() > rules.approve_up_to_minor {
        return Ok(Decision::Declined { reason: Some(code("AM02")) });
    }
    let parse = |r: &str| Rate::parse(r).unwrap_or_else(|_| unreachable!("a valid rate"));
    // The amount is at most `approve_up_to_minor` (an i64): 1% of it cannot overflow.
    let fee = parse(LOAN_FEE_RATE)
        .mul_money_half_even(amount, 1, NonZeroU32::MIN)
        .map_err(|_| ("FF01", "the amount is too large"))?;
    let fee = Money::new(fee.amount_minor().min(rules.fee_max_minor), amount.currency());
    Ok(Decision::Approved { annual_rate: parse(rate), fee, term_months: application.term_months })
}

fn refused(status: StatusCode, reason: &str, title: &str) -> Response {
    problem(status, PROBLEM_REFUSED, title, Some(reason))
}

/// Decides, then answers after `answer_delay_ms` (the decision is kept either way).
async fn decide(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = take_application(&shared, &headers, &body);
    shared.answer_delay().await;
    answer
}

fn take_application(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(key) = idempotency_key(headers) else {
        return refused(StatusCode::BAD_REQUEST, "FF01", "an Idempotency-Key of 1 to 35 letters, digits or '-'");
    };
    let Ok(application) = serde_json::from_slice::<Application>(body) else {
        return refused(StatusCode::BAD_REQUEST, "FF01", "not a loan application");
    };
    let decision = match decision(&shared.config.loans, &application) {
        Ok(d) => d,
        Err((reason, title)) => return refused(StatusCode::UNPROCESSABLE_ENTITY, reason, title),
    };
    let mut book = shared.loans.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((decided, first)) = book.0.get(&key) {
        if *decided != application {
            return problem(StatusCode::CONFLICT, PROBLEM_KEY_CONFLICT, "key used with another application", None);
        }
        return json(StatusCode::OK, first);
    }
    if book.len() >= shared.config.orders_max {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "about:blank", "too many applications", None);
    }
    book.0.insert(key, (application, decision.clone()));
    json(StatusCode::CREATED, &decision)
}

async fn status(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let not_found = || problem(StatusCode::NOT_FOUND, PROBLEM_DECISION_NOT_FOUND, "no such application", None);
    let Ok(key) = CallKey::parse(&key) else { return not_found() };
    let decision = shared.loans.lock().unwrap_or_else(PoisonError::into_inner).0.get(&key).map(|(_, d)| d.clone());
    match decision {
        Some(d) => json(StatusCode::OK, &d),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use bp_core::money::Currency;
    use chrono::TimeZone;

    use super::*;

    fn application(amount_minor: i64, term_months: u32, purpose: &str) -> Application {
        Application {
            customer: serde_json::from_str("\"0190c0de-0000-7000-8000-000000000007\"").expect("an id"),
            amount: Money::new(amount_minor, Currency::EUR),
            term_months,
            purpose: purpose.to_owned(),
            requested_at: chrono::Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().expect("time"),
        }
    }

    fn approved(rate: &str, fee_minor: i64, term_months: u32) -> Decision {
        let annual_rate = Rate::parse(rate).expect("rate");
        Decision::Approved { annual_rate, fee: Money::new(fee_minor, Currency::EUR), term_months }
    }

    #[test]
    fn decisions_follow_the_amount_the_term_band_and_the_purpose() {
        let rules = LoanRules::default();
        let declined = |c: &str| Ok(Decision::Declined { reason: Some(code(c)) });
        let cases = [
            (application(1_000_000, 12, "a car"), Ok(approved("0.049", 10_000, 12))),
            (application(1_000_000, 13, "a car"), Ok(approved("0.059", 10_000, 13))),
            (application(5_000_000, 84, "a roof"), Ok(approved("0.069", 50_000, 84))),
            (application(4_000_000, 360, "a house"), Ok(approved("0.079", 40_000, 360))),
            (application(12_345, 6, "books"), Ok(approved("0.049", 123, 6))),
            (application(5_000_001, 24, "a boat"), declined("AM02")),
            (application(100_000, 24, "please DECLINE me"), declined("MS03")),
            (application(0, 24, "nothing"), Err(("FF01", "the amount must be positive"))),
            (application(100_000, 0, "now"), Err(("FF01", "the term must be at least one month"))),
            (application(100_000, 361, "forever"), Err(("FF01", "the term is outside the provider's bands"))),
        ];
        for (a, expected) in cases {
            assert_eq!(decision(&rules, &a), expected, "{a:?}");
        }
    }

    #[test]
    fn the_fee_is_capped() {
        let rules = LoanRules { approve_up_to_minor: 10_000_000, fee_max_minor: 50_000 };
        assert_eq!(decision(&rules, &application(9_000_000, 48, "x")), Ok(approved("0.069", 50_000, 48)));
    }
}
