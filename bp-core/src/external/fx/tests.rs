// Amounts are written as major_minor units: `1_004_50` is 1,004.50.
#![allow(clippy::inconsistent_digit_grouping)]

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};

use super::*;
use crate::external::PayeeName;
use crate::iban::Iban;

const EUR: Currency = Currency::EUR;
const USD: Currency = Currency::USD;
const JPY: Currency = Currency::JPY;

fn t(s: i64) -> Timestamp {
    Utc.timestamp_opt(1_800_000_000 + s, 0).single().expect("time")
}

fn provider(source_minor: i64, target: Currency, rate: &str, fee_minor: i64) -> ProviderQuote {
    ProviderQuote {
        id: QuoteId::parse("q-1").expect("id"),
        source: Money::new(source_minor, EUR),
        target_currency: target,
        rate: Rate::parse(rate).expect("rate"),
        fee: Money::new(fee_minor, EUR),
        expires_at: t(60),
    }
}

fn payee() -> ExternalAccount {
    ExternalAccount {
        iban: Iban::parse("GB33BUKB20201555555555").expect("iban"),
        name: PayeeName::parse("Jane Doe").expect("name"),
        bic: None,
    }
}

fn payment(quote: FxQuote) -> NewInternationalPayment {
    NewInternationalPayment {
        customer: CustomerId::new_v7(),
        account: AccountId::new_v7(),
        hold: TransferId::new_v7(),
        quote,
        creditor: payee(),
        remittance: Some("invoice 7".into()),
    }
}

#[test]
fn the_customer_sees_exact_amounts_rounded_half_even() {
    // 1,000.00 EUR at 1.0842 is 1,084.20 USD; the 4.50 EUR fee comes on top.
    let q = FxQuote::of(&provider(1_000_00, USD, "1.0842", 4_50)).expect("quote");
    assert_eq!(
        (q.source, q.fee, q.debit, q.target),
        (Money::new(1_000_00, EUR), Money::new(4_50, EUR), Money::new(1_004_50, EUR), Money::new(1_084_20, USD))
    );
    // 0.15 EUR at 1.1 is 16.5 cents: half-even gives 16.
    assert_eq!(FxQuote::of(&provider(15, USD, "1.1", 0)).expect("quote").target, Money::new(16, USD));
    // 1.00 EUR at 161.235 is 161.235 yen: JPY has no minor unit.
    assert_eq!(FxQuote::of(&provider(1_00, JPY, "161.235", 0)).expect("quote").target, Money::new(161, JPY));
}

#[test]
fn a_quote_that_cannot_be_offered_says_why() {
    assert_eq!(FxQuote::of(&provider(1_00, EUR, "1", 0)), Err(QuoteError::SameCurrency));
    assert_eq!(FxQuote::of(&provider(0, USD, "1.1", 0)), Err(QuoteError::Amount));
    assert_eq!(FxQuote::of(&provider(1, USD, "0.4", 0)), Err(QuoteError::TooSmall(USD)));
    assert!(matches!(FxQuote::of(&provider(1_00, USD, "1.1", -1)), Err(QuoteError::Provider(_))));
    let mut other_fee = provider(1_00, USD, "1.1", 0);
    other_fee.fee = Money::new(1, USD);
    assert!(matches!(FxQuote::of(&other_fee), Err(QuoteError::Provider(_))));
    for bad in ["", "a b", ".", "..", &"x".repeat(65)] {
        assert!(QuoteId::parse(bad).is_err(), "{bad:?}");
    }
    assert!(QuoteId::parse("q-1.v2").is_ok());
}

#[test]
fn an_accepted_quote_must_be_the_providers_own_and_unexpired() {
    let current = provider(1_000_00, USD, "1.0842", 4_50);
    let shown = FxQuote::of(&current).expect("quote");
    assert_eq!(check_accepted(&shown, Some(&current), t(59)), Ok(()));
    assert_eq!(check_accepted(&shown, Some(&current), t(60)), Err(QuoteError::Expired { at: t(60) }));
    assert_eq!(check_accepted(&shown, None, t(0)), Err(QuoteError::Unknown));
    // Every term the customer could change is checked.
    let tampered = [
        FxQuote { rate: Rate::parse("1.09").expect("rate"), ..shown.clone() },
        FxQuote { target: Money::new(1_090_00, USD), ..shown.clone() },
        FxQuote { fee: Money::new(0, EUR), debit: Money::new(1_000_00, EUR), ..shown.clone() },
        FxQuote { source: Money::new(999_00, EUR), ..shown.clone() },
        FxQuote { expires_at: t(600), ..shown.clone() },
        FxQuote { id: QuoteId::parse("q-2").expect("id"), ..shown.clone() },
    ];
    for q in tampered {
        assert_eq!(check_accepted(&q, Some(&current), t(0)), Err(QuoteError::Changed), "{q:?}");
    }
}

#[test]
fn the_legs_keep_every_currency_at_zero_and_name_the_customer_once() {
    for fee in [0, 4_50] {
        let p = payment(FxQuote::of(&provider(1_000_00, USD, "1.0842", fee)).expect("quote"));
        let legs = legs(&p);
        assert_eq!(legs.len(), if fee == 0 { 2 } else { 3 });
        let mut sums: BTreeMap<AccountId, i64> = BTreeMap::new();
        for l in &legs {
            assert_eq!(l.hold_until, None, "a payment's holds last until the rail decides");
            *sums.entry(l.debit_account).or_default() -= l.amount.amount_minor();
            *sums.entry(l.credit_account).or_default() += l.amount.amount_minor();
        }
        // The customer pays source + fee; the payee's clearing leg carries the target amount.
        assert_eq!(sums[&p.account], -p.quote.debit.amount_minor());
        assert_eq!(sums[&RailId::Correspondent.clearing_account(USD)], 1_084_20);
        assert_eq!(sums[&SystemAccount::FxPosition.id(EUR)], 1_000_00);
        assert_eq!(sums[&SystemAccount::FxPosition.id(USD)], -1_084_20);
        let eur: i64 = legs.iter().filter(|l| l.amount.currency() == EUR).map(|l| l.amount.amount_minor()).sum();
        assert_eq!(eur, p.quote.debit.amount_minor());
        assert_eq!(legs[0].id, p.hold);
        let ids: std::collections::HashSet<_> = legs.iter().map(|l| l.id).collect();
        assert_eq!(ids.len(), legs.len(), "every leg has its own id");
    }
}

#[test]
fn the_request_holds_every_leg_and_the_rail_carries_the_target() {
    let p = payment(FxQuote::of(&provider(1_000_00, USD, "1.0842", 4_50)).expect("quote"));
    let tr = request(&p, t(0)).expect("request");
    assert_eq!(tr.record.kind, ServiceKind::InternationalTransfer);
    assert_eq!(tr.record.amount, p.quote.source);
    assert_eq!(tr.record.transfers, legs(&p).iter().map(|l| l.id).collect::<Vec<_>>());
    let holds = tr.effects.iter().filter(|e| matches!(e, Effect::PlaceHold(_))).count();
    assert_eq!(holds, 3);
    assert_eq!(rail_amount(&tr.record), Money::new(1_084_20, USD));
    let details = InternationalDetails::of(&tr.record).expect("details");
    assert_eq!((details.rail, details.quote), (RailId::Correspondent, p.quote.clone()));
    // The worker reads the interbank fields of the same details.
    let interbank = lifecycle::InterbankDetails::of(&tr.record).expect("interbank fields");
    assert_eq!(interbank.creditor, p.creditor);
    // A quote whose amounts do not add up is refused before anything is held.
    let mut broken = p.clone();
    broken.quote.debit = Money::new(1_000_00, EUR);
    assert_eq!(request(&broken, t(0)), Err(RequestError::Amount));
    let mut long = p;
    long.remittance = Some("x".repeat(141));
    assert_eq!(request(&long, t(0)), Err(RequestError::Remittance));
}
