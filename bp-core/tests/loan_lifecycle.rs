//! The loan's state machine (`bp_core::external::loan`): every transition of the application
//! (decided, declined, refused, unknown and reconciled by key, offer expiry), acceptance and its
//! exact legs, collection on due dates, arrears and recovery, partial and full early repayment,
//! replays; then whole lives driven through the ledger's own rules (`rules::decide` on a
//! `LedgerState`, what every store runs), with a property test over random amounts, rates,
//! terms and repayment patterns: every currency sums to zero after every step, the outstanding
//! principal never grows and never goes below zero, the loan is closed exactly when repaid, and
//! the money adds up to the schedule's.

// Amounts are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

use bp_core::account::{AccountKind, NewAccount, SystemAccount};
use bp_core::command::{Command, Outcome};
use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::event::EventBody;
use bp_core::external::lifecycle::{self, Effect, Transition, TransitionError};
use bp_core::external::loan::{
    Arrears, DecisionStatus, InstalmentState, LoanApplication, LoanDecision, LoanDetails, LoanInput, LoanLeg,
    LoanPolicy, LoanRejection, LoanRequestError, LoanTransitionError, NewLoan, PURPOSE_CHARS_MAX, apply,
    receivable_account, start_of, transfer_id, transition,
};
use bp_core::external::schedule::{self, TERM_MONTHS_MAX};
use bp_core::external::{BackOff, CallError, CallKey, NotSent, ReasonCode, Refusal, Unknown};
use bp_core::invariants::{AccountBooks, Books, Scope, check};
use bp_core::rate::Rate;
use bp_core::rules::{LedgerView, decide};
use bp_core::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use bp_core::state::LedgerState;
use bp_core::transfer::{TransferKind, TransferRequest};
use bp_core::{AccountId, Currency, CustomerId, LedgerError, Money, ServiceRecordId, Timestamp, TransferId};
use chrono::{Months, NaiveDate, TimeDelta, TimeZone};
use proptest::prelude::*;
use uuid::Uuid;

const EUR: Currency = Currency::EUR;

fn eur(minor: i64) -> Money {
    Money::new(minor, EUR)
}

fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 10, 9, 0, 0).single().expect("time")
}

fn at(s: i64) -> Timestamp {
    t0() + TimeDelta::seconds(s)
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

fn policy() -> LoanPolicy {
    LoanPolicy {
        back_off: BackOff { first_ms: 1_000, max_ms: 60_000 },
        stuck_after_s: 3_600,
        offer_valid_s: 7 * 86_400,
        arrears_back_off: BackOff { first_ms: 3_600_000, max_ms: 86_400_000 },
    }
}

fn loan_id() -> ServiceRecordId {
    ServiceRecordId::from_uuid(Uuid::from_u128(0x0190_c0de_0000_7000_8000_0000_0000_10a1))
}

fn customer() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(0x000c_0570_0000_7000_8000_0000_0000_0001))
}

fn account() -> AccountId {
    AccountId::from_uuid(Uuid::from_u128(0xacc0_0000_0000_7000_8000_0000_0000_0001))
}

fn new_loan(amount_minor: i64, term_months: u32) -> NewLoan {
    NewLoan {
        id: loan_id(),
        customer: customer(),
        account: account(),
        amount: eur(amount_minor),
        term_months,
        purpose: "a used car".to_owned(),
    }
}

fn key() -> CallKey {
    CallKey::parse(&loan_id().as_uuid().simple().to_string()).expect("key")
}

fn rate(s: &str) -> Rate {
    Rate::parse_non_negative(s).expect("rate")
}

fn approved(fee_minor: i64) -> LoanDecision {
    LoanDecision::Approved { annual_rate: rate("0.06"), fee: eur(fee_minor), term_months: 12 }
}

fn requested() -> ServiceRecord {
    apply(&new_loan(12_000_00, 12), t0()).expect("apply").record
}

fn step(record: &ServiceRecord, input: LoanInput, now: Timestamp) -> Transition {
    transition(record, &input, now, &policy(), 0).unwrap_or_else(|e| panic!("{input:?} on {:?}: {e}", record.status))
}

fn refused(record: &ServiceRecord, input: LoanInput, now: Timestamp) -> LoanTransitionError {
    match transition(record, &input, now, &policy(), 0) {
        Err(e) => e,
        Ok(t) => panic!("{input:?} on {:?} was applied: {:?}", record.status, t.record.status),
    }
}

/// The input changes nothing: the same record, no effect (the adapter writes nothing).
fn unchanged(record: &ServiceRecord, input: LoanInput, now: Timestamp) {
    let t = step(record, input.clone(), now);
    assert_eq!(&t.record, record, "{input:?} changed the record");
    assert!(t.effects.is_empty(), "{input:?} had effects {:?}", t.effects);
}

/// The effects of a transition but its events.
fn actions(t: &Transition) -> Vec<Effect> {
    t.effects.iter().filter(|e| !matches!(e, Effect::Emit(_))).cloned().collect()
}

fn emitted(t: &Transition) -> Vec<ServiceStatus> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(EventBody::ServiceUpdated { status, .. }) => Some(*status),
            _ => None,
        })
        .collect()
}

fn posts(t: &Transition) -> Vec<TransferRequest> {
    t.effects.iter().filter_map(|e| if let Effect::Post(p) = e { Some(p.clone()) } else { None }).collect()
}

fn details(record: &ServiceRecord) -> LoanDetails {
    LoanDetails::of(record).expect("a loan's details")
}

fn offered(fee_minor: i64) -> ServiceRecord {
    let submitted = step(&requested(), LoanInput::Due, at(0)).record;
    step(&submitted, LoanInput::Decided(approved(fee_minor)), at(1)).record
}

/// Accepted at `at(60)`: 2026-03-10, first instalment due 2026-04-10.
fn active(fee_minor: i64) -> ServiceRecord {
    step(&offered(fee_minor), LoanInput::Accept, at(60)).record
}

/// A time on the day instalment `n` of [`active`] is due.
fn on_due_date(n: u32) -> Timestamp {
    start_of(day(2026, 3, 10).checked_add_months(Months::new(n)).expect("date")) + TimeDelta::hours(2)
}

fn collect(record: &ServiceRecord, available_minor: i64, now: Timestamp) -> Transition {
    step(record, LoanInput::Collect { available_minor }, now)
}

#[test]
fn an_application_is_validated_and_recorded_without_money() {
    let t = apply(&new_loan(12_000_00, 12), t0()).expect("apply");
    let r = &t.record;
    assert_eq!(
        (r.kind, r.status, r.next_check_at, r.version),
        (ServiceKind::Loan, ServiceStatus::Requested, Some(t0()), 0)
    );
    assert!(r.transfers.is_empty(), "an application holds nothing");
    assert_eq!(t.effects, vec![Effect::Emit(lifecycle::event(r))]);
    let d = details(r);
    assert_eq!((d.key, d.receivable, d.outstanding), (key(), receivable_account(loan_id()), eur(0)));
    assert_eq!((d.purpose.as_str(), d.requested_term_months), ("a used car", 12));
    let application = LoanApplication::of(r).expect("application");
    assert_eq!((application.amount, application.term_months, application.customer), (eur(12_000_00), 12, customer()));

    let refusals = [
        (NewLoan { amount: eur(0), ..new_loan(1, 12) }, LoanRequestError::Amount),
        (new_loan(-5, 12), LoanRequestError::Amount),
        (new_loan(100_00, 0), LoanRequestError::Term),
        (new_loan(100_00, TERM_MONTHS_MAX + 1), LoanRequestError::Term),
        (NewLoan { purpose: String::new(), ..new_loan(100_00, 12) }, LoanRequestError::Purpose),
        (NewLoan { purpose: "   ".to_owned(), ..new_loan(100_00, 12) }, LoanRequestError::Purpose),
        (NewLoan { purpose: "a\nb".to_owned(), ..new_loan(100_00, 12) }, LoanRequestError::Purpose),
        (NewLoan { purpose: "é".repeat(PURPOSE_CHARS_MAX + 1), ..new_loan(100_00, 12) }, LoanRequestError::Purpose),
    ];
    for (loan, expected) in refusals {
        assert_eq!(apply(&loan, t0()), Err(expected.clone()), "{loan:?}");
    }
    assert!(apply(&NewLoan { purpose: "é".repeat(PURPOSE_CHARS_MAX), ..new_loan(100_00, 12) }, t0()).is_ok());
    assert!(apply(&new_loan(100_00, TERM_MONTHS_MAX), t0()).is_ok());
}

#[test]
fn due_sends_the_application_once_then_asks_with_back_off() {
    let r = requested();
    let t = step(&r, LoanInput::Due, at(0));
    assert_eq!(actions(&t), vec![Effect::Decide(key())]);
    assert_eq!((t.record.status, t.record.checks), (ServiceStatus::Submitted, 1));
    assert_eq!(emitted(&t), vec![ServiceStatus::Submitted]);
    assert_eq!(t.record.next_check_at, Some(at(0) + TimeDelta::milliseconds(500)), "back-off 0 with random 0");
    unchanged(&t.record, LoanInput::Due, at(0));
    let asked = step(&t.record, LoanInput::Due, at(1));
    assert_eq!(actions(&asked), vec![Effect::QueryDecision(key())], "never decided twice blindly");
    assert_eq!((asked.record.status, asked.record.checks), (ServiceStatus::Submitted, 2));
    assert!(emitted(&asked).is_empty());
    // A late failure of the status query changes nothing.
    unchanged(&asked.record, LoanInput::StatusFailed(CallError::Unknown(Unknown::Timeout)), at(2));
    // Undecided past the bound: flagged stuck, still asked about.
    let stuck = step(&asked.record, LoanInput::Due, at(3_600));
    assert_eq!(stuck.record.stuck_since, Some(at(3_600)));
    assert_eq!(actions(&stuck), vec![Effect::QueryDecision(key())]);
    let decided = step(&stuck.record, LoanInput::Decided(approved(0)), at(3_601));
    assert_eq!((decided.record.status, decided.record.stuck_since), (ServiceStatus::Offered, None));
}

#[test]
fn an_approval_makes_an_offer_that_expires() {
    let submitted = step(&requested(), LoanInput::Due, at(0)).record;
    let t = step(&submitted, LoanInput::Decided(approved(150_00)), at(1));
    assert_eq!(t.record.status, ServiceStatus::Offered);
    assert!(actions(&t).is_empty(), "an offer moves no money");
    assert_eq!(emitted(&t), vec![ServiceStatus::Offered]);
    let offer = details(&t.record).offer.expect("offer");
    let preview = schedule::annuity(eur(12_000_00), rate("0.06"), 12, day(2026, 4, 10)).expect("schedule");
    assert_eq!((offer.annual_rate, offer.fee, offer.term_months), (rate("0.06"), eur(150_00), 12));
    // 12,000.00 at 6% over 12 months: 1,032.80 a month (a published annuity figure).
    assert_eq!(offer.instalment, eur(1_032_80));
    assert_eq!(Some(offer.total_interest), preview.total_interest());
    assert_eq!(offer.total_interest, eur(393_58), "computed independently (Python's Decimal, half-even)");
    let expires = at(1) + TimeDelta::days(7);
    assert_eq!((offer.expires_at, t.record.next_check_at), (expires, Some(expires)));
    // The same decision again (a retried call, a status query) changes nothing; another one is
    // a conflict to surface.
    unchanged(&t.record, LoanInput::Decided(approved(150_00)), at(2));
    unchanged(&t.record, LoanInput::StatusReport(DecisionStatus::Known { decision: approved(150_00) }), at(2));
    assert_eq!(
        refused(&t.record, LoanInput::Decided(approved(0)), at(2)),
        LoanTransitionError::Conflict { status: ServiceStatus::Offered, reported: "different decision" }
    );
    assert!(matches!(
        refused(&t.record, LoanInput::DecideFailed(CallError::Refused(Refusal { code: None })), at(2)),
        LoanTransitionError::Conflict { .. }
    ));
    assert!(matches!(
        refused(&t.record, LoanInput::StatusReport(DecisionStatus::NotFound), at(2)),
        LoanTransitionError::Conflict { .. }
    ));
    // Before expiry the worker's turn changes nothing; at expiry the offer lapses.
    unchanged(&t.record, LoanInput::Due, expires - TimeDelta::seconds(1));
    assert_eq!(
        refused(&t.record, LoanInput::Accept, expires),
        LoanTransitionError::OfferExpired { expired_at: expires }
    );
    let lapsed = step(&t.record, LoanInput::Due, expires);
    assert_eq!((lapsed.record.status, lapsed.record.next_check_at), (ServiceStatus::Rejected, None));
    assert_eq!(details(&lapsed.record).rejection, Some(LoanRejection::OfferExpired));
    assert_eq!(emitted(&lapsed), vec![ServiceStatus::Rejected]);
    assert!(actions(&lapsed).is_empty());
    assert_eq!(
        refused(&lapsed.record, LoanInput::Accept, expires),
        LoanTransitionError::NotOffered { status: ServiceStatus::Rejected }
    );
    unchanged(&lapsed.record, LoanInput::Decided(approved(150_00)), expires);
}

#[test]
fn a_declined_or_refused_application_is_rejected_with_its_reason() {
    let submitted = step(&requested(), LoanInput::Due, at(0)).record;
    let declined = LoanDecision::Declined { reason: Some(ReasonCode::parse("CR01").expect("code")) };
    let t = step(&submitted, LoanInput::Decided(declined.clone()), at(1));
    assert_eq!((t.record.status, t.record.next_check_at), (ServiceStatus::Rejected, None));
    assert_eq!(t.record.reason.as_ref().map(ReasonCode::as_str), Some("CR01"));
    assert_eq!(details(&t.record).rejection, Some(LoanRejection::Declined));
    assert_eq!(emitted(&t), vec![ServiceStatus::Rejected]);
    assert!(actions(&t).is_empty() && t.record.transfers.is_empty());
    unchanged(&t.record, LoanInput::Decided(declined), at(2));
    unchanged(&t.record, LoanInput::Due, at(3));
    assert!(matches!(refused(&t.record, LoanInput::Decided(approved(0)), at(2)), LoanTransitionError::Conflict { .. }));
    assert_eq!(
        refused(&t.record, LoanInput::Accept, at(2)),
        LoanTransitionError::NotOffered { status: ServiceStatus::Rejected }
    );

    let code = ReasonCode::parse("FF01").expect("code");
    let r = step(&submitted, LoanInput::DecideFailed(CallError::Refused(Refusal { code: Some(code.clone()) })), at(1));
    assert_eq!((r.record.status, r.record.reason.clone()), (ServiceStatus::Rejected, Some(code)));
    assert_eq!(details(&r.record).rejection, Some(LoanRejection::Refused));
    assert!(matches!(refused(&r.record, LoanInput::Decided(approved(0)), at(2)), LoanTransitionError::Conflict { .. }));
}

#[test]
fn an_unusable_approval_is_rejected_as_an_invalid_offer() {
    let submitted = step(&requested(), LoanInput::Due, at(0)).record;
    let terms = |annual_rate: &str, fee: Money, term_months| LoanDecision::Approved {
        annual_rate: rate(annual_rate),
        fee,
        term_months,
    };
    for bad in [
        terms("0.06", eur(12_000_00), 12),
        terms("0.06", eur(-1), 12),
        terms("0.06", Money::new(1_00, Currency::USD), 12),
        terms("0.06", eur(0), 0),
        terms("0.06", eur(0), TERM_MONTHS_MAX + 1),
        terms("1.5", eur(0), 12),
    ] {
        let t = step(&submitted, LoanInput::Decided(bad.clone()), at(1));
        assert_eq!(t.record.status, ServiceStatus::Rejected, "{bad:?}");
        assert_eq!(details(&t.record).rejection, Some(LoanRejection::InvalidOffer), "{bad:?}");
        unchanged(&t.record, LoanInput::Decided(bad), at(2));
    }
}

#[test]
fn an_unknown_outcome_is_reconciled_by_asking_never_by_deciding_again() {
    let submitted = step(&requested(), LoanInput::Due, at(0)).record;
    let unknown = step(&submitted, LoanInput::DecideFailed(CallError::Unknown(Unknown::Timeout)), at(1));
    assert_eq!(unknown.record.status, ServiceStatus::Unknown);
    assert!(actions(&unknown).is_empty());
    // A late failure of the same call changes nothing.
    unchanged(&unknown.record, LoanInput::DecideFailed(CallError::Unknown(Unknown::ConnectionLost)), at(1));
    let next = unknown.record.next_check_at.expect("scheduled");
    unchanged(&unknown.record, LoanInput::Due, next - TimeDelta::milliseconds(1));
    for _ in 0..3 {
        let asked = step(&unknown.record, LoanInput::Due, next);
        assert_eq!(actions(&asked), vec![Effect::QueryDecision(key())]);
    }
    // The provider never received it: sent again, with the same key.
    let asked = step(&unknown.record, LoanInput::Due, next).record;
    let again = step(&asked, LoanInput::StatusReport(DecisionStatus::NotFound), next);
    assert_eq!(again.record.status, ServiceStatus::Requested);
    let resent = step(&again.record, LoanInput::Due, again.record.next_check_at.expect("scheduled"));
    assert_eq!(actions(&resent), vec![Effect::Decide(key())], "the same key");
    // Or it did, and tells us.
    let known = LoanInput::StatusReport(DecisionStatus::Known { decision: approved(0) });
    assert_eq!(step(&asked, known, next).record.status, ServiceStatus::Offered);
    // Never sent (circuit open): sent again later, with the same key.
    let not_sent = step(&submitted, LoanInput::DecideFailed(CallError::NotSent(NotSent::CircuitOpen)), at(1));
    assert_eq!(not_sent.record.status, ServiceStatus::Requested);
    let resent = step(&not_sent.record, LoanInput::Due, not_sent.record.next_check_at.expect("scheduled"));
    assert_eq!(actions(&resent), vec![Effect::Decide(key())]);
}

#[test]
fn accepting_opens_the_receivable_and_disburses_exactly() {
    let offer = offered(150_00);
    let t = step(&offer, LoanInput::Accept, at(60));
    let funding = SystemAccount::LoanFunding.id(EUR);
    let receivable = receivable_account(loan_id());
    let leg = |leg, kind, debit_account, credit_account, amount, reference: &str| TransferRequest {
        id: transfer_id(loan_id(), leg),
        kind,
        debit_account,
        credit_account,
        amount,
        reference: Some(reference.to_owned()),
        hold_until: None,
    };
    let legs = [
        leg(LoanLeg::Disbursement, TransferKind::Loan, funding, account(), eur(12_000_00), "loan disbursement"),
        leg(LoanLeg::Receivable, TransferKind::Loan, receivable, funding, eur(12_000_00), "loan receivable"),
        leg(LoanLeg::Fee, TransferKind::Fee, account(), SystemAccount::Fees.id(EUR), eur(150_00), "loan fee"),
    ];
    let mut expected = vec![Effect::OpenReceivable(receivable)];
    expected.extend(legs.iter().cloned().map(Effect::Post));
    assert_eq!(actions(&t), expected);
    assert_eq!(t.record.transfers, legs.iter().map(|l| l.id).collect::<Vec<_>>(), "every posting, in order");
    assert_eq!(emitted(&t), vec![ServiceStatus::Active]);
    let d = details(&t.record);
    let plan = schedule::annuity(eur(12_000_00), rate("0.06"), 12, day(2026, 4, 10)).expect("schedule");
    assert_eq!(d.schedule.len(), 12);
    for (mine, theirs) in d.schedule.iter().zip(&plan.instalments) {
        assert_eq!(
            (mine.number, mine.due_on, mine.principal, mine.interest, mine.total, mine.outstanding_after),
            (theirs.number, theirs.due_on, theirs.principal, theirs.interest, theirs.total, theirs.outstanding_after)
        );
        assert_eq!(mine.state, InstalmentState::Due);
    }
    assert_eq!(d.outstanding, eur(12_000_00));
    let disbursement = d.disbursement.expect("disbursed");
    assert_eq!((disbursement.transfer, disbursement.fee_transfer), (legs[0].id, Some(legs[2].id)));
    assert_eq!(t.record.next_check_at, Some(start_of(day(2026, 4, 10))));
    // Accepted again (a retried request): nothing more.
    unchanged(&t.record, LoanInput::Accept, at(61));
    // Without a fee there is no fee leg.
    let free = step(&offered(0), LoanInput::Accept, at(60));
    assert_eq!(posts(&free).len(), 2);
    assert_eq!(details(&free.record).disbursement.expect("disbursed").fee_transfer, None);
    // Only an offer can be accepted.
    assert_eq!(
        refused(&requested(), LoanInput::Accept, at(0)),
        LoanTransitionError::NotOffered { status: ServiceStatus::Requested }
    );
}

#[test]
fn instalments_are_collected_on_their_due_dates() {
    let r = active(0);
    let d = details(&r);
    // Before the first due date nothing is due, whatever the balance.
    unchanged(&r, LoanInput::Collect { available_minor: 1_000_000_00 }, on_due_date(1) - TimeDelta::hours(3));
    unchanged(&r, LoanInput::Due, on_due_date(1) - TimeDelta::hours(3));
    // Due: the worker must pass the balance.
    assert_eq!(refused(&r, LoanInput::Due, on_due_date(1)), LoanTransitionError::BalanceNeeded);
    let first = &d.schedule[0];
    let t = collect(&r, first.total.amount_minor(), on_due_date(1));
    let p = posts(&t);
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].kind, p[0].debit_account, p[0].credit_account), (TransferKind::Loan, account(), d.receivable));
    assert_eq!((p[0].id, p[0].amount), (transfer_id(loan_id(), LoanLeg::InstalmentPrincipal(1)), first.principal));
    assert_eq!(
        (p[1].kind, p[1].debit_account, p[1].credit_account),
        (TransferKind::Interest, account(), SystemAccount::InterestIncome.id(EUR))
    );
    assert_eq!((p[1].id, p[1].amount), (transfer_id(loan_id(), LoanLeg::InstalmentInterest(1)), first.interest));
    assert_eq!(t.record.status, ServiceStatus::Active);
    assert_eq!(emitted(&t), vec![ServiceStatus::Active], "the schedule changed: an event");
    let after = details(&t.record);
    assert!(matches!(after.schedule[0].state, InstalmentState::Paid { paid_on, .. } if paid_on == first.due_on));
    assert_eq!(after.outstanding, first.outstanding_after);
    assert_eq!(t.record.next_check_at, Some(start_of(d.schedule[1].due_on)));
    // The same turn again, with the balance as it is now: nothing more.
    unchanged(&t.record, LoanInput::Collect { available_minor: 0 }, on_due_date(1));
    unchanged(&t.record, LoanInput::Collect { available_minor: 1_000_000_00 }, on_due_date(1) + TimeDelta::hours(1));
}

#[test]
fn too_little_puts_the_loan_in_arrears_until_it_catches_up() {
    let r = active(0);
    let d = details(&r);
    let (first, second) = (d.schedule[0].total.amount_minor(), d.schedule[1].total.amount_minor());
    let t = collect(&r, first - 1, on_due_date(1));
    assert_eq!(t.record.status, ServiceStatus::InArrears);
    assert!(posts(&t).is_empty(), "nothing is collected in part");
    assert_eq!(emitted(&t), vec![ServiceStatus::InArrears]);
    let arrears = details(&t.record).arrears.expect("arrears");
    assert_eq!(arrears, Arrears { since: d.schedule[0].due_on, attempts: 1, last_attempt_at: on_due_date(1) });
    let retry = t.record.next_check_at.expect("retried");
    assert_eq!(retry, on_due_date(1) + TimeDelta::minutes(30), "arrears back-off 0 with random 0");
    // An early turn that finds too little changes nothing; at the retry it counts.
    unchanged(&t.record, LoanInput::Collect { available_minor: 0 }, retry - TimeDelta::seconds(1));
    let again = collect(&t.record, 0, retry);
    assert_eq!((again.record.status, again.record.checks), (ServiceStatus::InArrears, 2));
    assert!(emitted(&again).is_empty(), "no new status");
    assert_eq!(details(&again.record).arrears.map(|a| a.attempts), Some(2));
    // A month later two are due; enough for one: still in arrears, since the second's date.
    let one = collect(&again.record, first, on_due_date(2));
    assert_eq!((one.record.status, posts(&one).len()), (ServiceStatus::InArrears, 2));
    assert_eq!(details(&one.record).arrears.map(|a| a.since), Some(d.schedule[1].due_on));
    assert_eq!(
        refused(&one.record, LoanInput::Repay { id: TransferId::new_v7(), amount: eur(1_00) }, on_due_date(2)),
        LoanTransitionError::NotActive { status: ServiceStatus::InArrears }
    );
    // Caught up: active again, due at the next date.
    let caught_up = collect(&one.record, second, on_due_date(2) + TimeDelta::hours(1));
    assert_eq!(caught_up.record.status, ServiceStatus::Active);
    assert_eq!(emitted(&caught_up), vec![ServiceStatus::Active]);
    let after = details(&caught_up.record);
    assert_eq!((after.arrears, caught_up.record.checks), (None, 0));
    assert_eq!(caught_up.record.next_check_at, Some(start_of(d.schedule[2].due_on)));
    assert_eq!(after.outstanding, d.schedule[1].outstanding_after);
    // Both overdue instalments at once when the balance covers both.
    let both = collect(&again.record, first + second, on_due_date(2));
    assert_eq!((both.record.status, posts(&both).len()), (ServiceStatus::Active, 4));
}

#[test]
fn a_partial_early_repayment_recomputes_the_rest_of_the_schedule() {
    let r = active(0);
    let d = details(&r);
    let paid = collect(&r, d.schedule[0].total.amount_minor(), on_due_date(1)).record;
    let now = on_due_date(1) + TimeDelta::days(3);
    let id = TransferId::new_v7();
    let t = step(&paid, LoanInput::Repay { id, amount: eur(5_000_00) }, now);
    assert_eq!(
        posts(&t),
        vec![TransferRequest {
            id,
            kind: TransferKind::Loan,
            debit_account: account(),
            credit_account: d.receivable,
            amount: eur(5_000_00),
            reference: Some("loan early repayment".to_owned()),
            hold_until: None,
        }]
    );
    assert_eq!(t.record.status, ServiceStatus::Active);
    assert_eq!(emitted(&t), vec![ServiceStatus::Active]);
    let after = details(&t.record);
    let left = d.schedule[0].outstanding_after.checked_sub(eur(5_000_00)).expect("sub");
    assert_eq!(after.outstanding, left);
    let rest = schedule::after_partial_repayment(left, rate("0.06"), d.schedule[0].due_on, 2, 12).expect("rest");
    assert_eq!(after.schedule.len(), 12, "the same number of instalments");
    assert_eq!(after.schedule[0], details(&paid).schedule[0], "the paid one is kept");
    for (mine, theirs) in after.schedule[1..].iter().zip(&rest.instalments) {
        assert_eq!((mine.number, mine.due_on, mine.total), (theirs.number, theirs.due_on, theirs.total));
        assert!(mine.total.amount_minor() < d.schedule[1].total.amount_minor(), "a lower instalment");
    }
    assert_eq!(after.repayments.len(), 1);
    // The same repayment again (a retried request) changes nothing; its id with another
    // amount is refused.
    unchanged(&t.record, LoanInput::Repay { id, amount: eur(5_000_00) }, now);
    assert_eq!(
        refused(&t.record, LoanInput::Repay { id, amount: eur(4_000_00) }, now),
        LoanTransitionError::RepaymentConflict { id }
    );
    // Bad amounts.
    let outstanding = left;
    for amount in [eur(0), eur(-1), Money::new(1_00, Currency::USD), eur(outstanding.amount_minor() + 1)] {
        assert_eq!(
            refused(&t.record, LoanInput::Repay { id: TransferId::new_v7(), amount }, now),
            LoanTransitionError::RepaymentAmount { outstanding },
            "{amount:?}"
        );
    }
    // Leaving less than a minor unit per remaining instalment cannot be scheduled.
    let almost = eur(outstanding.amount_minor() - 5);
    assert_eq!(
        refused(&t.record, LoanInput::Repay { id: TransferId::new_v7(), amount: almost }, now),
        LoanTransitionError::RemainderTooSmall
    );
    // On a due date, the instalment is collected first.
    assert_eq!(
        refused(&t.record, LoanInput::Repay { id: TransferId::new_v7(), amount: eur(1_00) }, on_due_date(2)),
        LoanTransitionError::InstalmentDue { number: 2, due_on: d.schedule[1].due_on }
    );
}

#[test]
fn a_full_early_repayment_closes_the_loan() {
    let r = active(0);
    let d = details(&r);
    let paid = collect(&r, d.schedule[0].total.amount_minor(), on_due_date(1)).record;
    let owed = details(&paid).outstanding;
    let id = TransferId::new_v7();
    let now = on_due_date(1) + TimeDelta::days(1);
    let t = step(&paid, LoanInput::Repay { id, amount: owed }, now);
    assert_eq!((t.record.status, t.record.next_check_at), (ServiceStatus::Closed, None));
    assert_eq!(emitted(&t), vec![ServiceStatus::Closed]);
    assert_eq!(posts(&t).iter().map(|p| p.amount).collect::<Vec<_>>(), vec![owed]);
    let after = details(&t.record);
    assert_eq!(after.outstanding, eur(0));
    assert_eq!(after.schedule.len(), 1, "only the paid instalment is left");
    unchanged(&t.record, LoanInput::Repay { id, amount: owed }, now);
    unchanged(&t.record, LoanInput::Collect { available_minor: 1_000_000_00 }, on_due_date(5));
    unchanged(&t.record, LoanInput::Accept, now);
    assert_eq!(
        refused(&t.record, LoanInput::Repay { id: TransferId::new_v7(), amount: eur(1) }, now),
        LoanTransitionError::NotActive { status: ServiceStatus::Closed }
    );
}

#[test]
fn loans_and_payments_do_not_mix() {
    let mut payment = requested();
    payment.kind = ServiceKind::InterbankTransfer;
    assert_eq!(refused(&payment, LoanInput::Due, at(0)), LoanTransitionError::NotALoan("another kind of service"));
    let loan = requested();
    let input = lifecycle::Input::Due;
    assert!(matches!(
        lifecycle::transition(&loan, &input, at(0), &lifecycle::Policy::default(), 0),
        Err(TransitionError::NotExternalPayment(_))
    ));
    let mut broken = requested();
    broken.details.remove("key");
    assert_eq!(refused(&broken, LoanInput::Due, at(0)), LoanTransitionError::NotALoan("details"));
}

#[test]
fn loan_details_round_trip_through_json() {
    let r = collect(&active(150_00), 1_000_000_00, on_due_date(1)).record;
    let d = details(&r);
    let json = serde_json::to_value(&d).expect("json");
    assert_eq!(json["schedule"][0]["state"], "paid");
    assert_eq!(json["schedule"][1]["state"], "due");
    assert_eq!(json["offer"]["annual_rate"], "0.06");
    assert_eq!(json["outstanding"]["amount"], d.outstanding.to_decimal_string());
    assert_eq!(serde_json::from_value::<LoanDetails>(json).expect("back"), d);
    let decision = approved(1);
    let back: LoanDecision = serde_json::from_str(&serde_json::to_string(&decision).expect("json")).expect("back");
    assert_eq!(back, decision);
    let status = DecisionStatus::Known { decision: LoanDecision::Declined { reason: None } };
    let text = serde_json::to_string(&status).expect("json");
    assert_eq!(text, r#"{"found":"known","decision":{"decision":"declined"}}"#);
    assert_eq!(serde_json::from_str::<DecisionStatus>(&text).expect("back"), status);
    assert_eq!(LoanPolicy::default().validate(), Ok(()));
    assert!(LoanPolicy { offer_valid_s: 0, ..LoanPolicy::default() }.validate().is_err());
}

// ---------------------------------------------------------------------------------------------
// Through the ledger's rules
// ---------------------------------------------------------------------------------------------

/// A ledger with one customer's EUR account, and a loan on it, every step decided by the
/// ledger's rules and written into the state as a store would.
struct Bank {
    state: LedgerState,
    now: Timestamp,
    loan: ServiceRecord,
}

impl Bank {
    fn run(&mut self, cmd: &Command) -> Result<Outcome, LedgerError> {
        let decision = decide(&self.state, cmd, self.now)?;
        check(&Books::of_effects(&self.state, &decision.effects)).unwrap_or_else(|v| panic!("{v}"));
        self.state.apply(&decision.effects);
        Ok(decision.executed.outcome)
    }

    /// A customer with an account holding `balance_minor`, applying for `loan`.
    fn open(loan: &NewLoan, balance_minor: i64) -> Bank {
        let mut bank = Bank { state: LedgerState::new(), now: t0(), loan: requested() };
        let username = Username::parse("borrower").expect("username");
        let person = NewCustomer::person(loan.customer, username, "Bo", "Rower", KycStatus::Verified);
        bank.run(&Command::OpenCustomer(Box::new(person))).expect("customer");
        let open = NewAccount {
            id: loan.account,
            customer_id: loan.customer,
            kind: AccountKind::Current,
            currency: EUR,
            overdraft_limit_minor: 0,
        };
        bank.run(&Command::OpenAccount(open)).expect("account");
        bank.fund(balance_minor);
        let t = apply(loan, bank.now).expect("apply");
        match bank.run(&Command::RequestService(Box::new(t))) {
            Ok(Outcome::Service(r)) => bank.loan = *r,
            other => panic!("request: {other:?}"),
        }
        bank
    }

    fn fund(&mut self, amount_minor: i64) {
        if amount_minor > 0 {
            let deposit = TransferRequest {
                id: TransferId::new_v7(),
                kind: TransferKind::Deposit,
                debit_account: SystemAccount::Funding.id(EUR),
                credit_account: account(),
                amount: eur(amount_minor),
                reference: None,
                hold_until: None,
            };
            self.run(&Command::Transfer(deposit)).expect("deposit");
        }
    }

    fn balance(&self, id: AccountId) -> i64 {
        self.state.account(id).map_or(0, |a| a.posted_minor)
    }

    fn available(&self) -> i64 {
        self.state.account(account()).map_or(0, |a| a.available_minor())
    }

    fn details(&self) -> LoanDetails {
        details(&self.loan)
    }

    /// Applies `input` now, through the rules; a transition that changes nothing is not written.
    fn step(&mut self, input: &LoanInput) -> Result<Transition, LoanTransitionError> {
        let t = transition(&self.loan, input, self.now, &policy(), 7)?;
        if t.record != self.loan || !t.effects.is_empty() {
            let cmd = Command::ApplyService {
                id: self.loan.id,
                expected_version: self.loan.version,
                transition: Box::new(t.clone()),
            };
            match self.run(&cmd) {
                Ok(Outcome::Service(r)) => self.loan = *r,
                other => panic!("{input:?} on {:?}: {other:?}", self.loan.status),
            }
        }
        Ok(t)
    }

    /// The worker's turn, reading the balance as a worker does.
    fn turn(&mut self) -> Transition {
        let input = LoanInput::Collect { available_minor: self.available() };
        self.step(&input).unwrap_or_else(|e| panic!("turn on {:?}: {e}", self.loan.status))
    }

    /// Decided, offered and accepted now.
    fn accept(&mut self, decision: LoanDecision) {
        self.step(&LoanInput::Due).expect("due");
        self.step(&LoanInput::Decided(decision)).expect("decided");
        self.step(&LoanInput::Accept).expect("accept");
        assert_eq!(self.loan.status, ServiceStatus::Active);
    }

    fn invariants(&self) {
        let mut books = Books::new(Scope::Ledger);
        books.accounts = self.state.accounts().map(|a| AccountBooks { account: a.clone(), history: None }).collect();
        books.transfers = Some(self.state.transfers().cloned().collect());
        check(&books).unwrap_or_else(|v| panic!("{v}"));
        let receivable = self.balance(receivable_account(loan_id()));
        assert_eq!(receivable, -self.details().outstanding.amount_minor(), "the receivable is what is owed");
    }
}

#[test]
fn a_whole_life_through_the_ledger_rules_adds_up() {
    let loan = new_loan(12_000_00, 12);
    let mut bank = Bank::open(&loan, 500_00);
    bank.accept(approved(150_00));
    assert_eq!(bank.balance(account()), 500_00 + 12_000_00 - 150_00);
    assert_eq!(bank.balance(SystemAccount::LoanFunding.id(EUR)), 0, "lent out and booked as receivable");
    assert_eq!(bank.balance(receivable_account(loan_id())), -12_000_00);
    assert_eq!(bank.balance(SystemAccount::Fees.id(EUR)), 150_00);
    bank.invariants();
    let plan = bank.details().schedule;
    // Instalments 1 to 12 on their due dates; the account runs dry at the 4th: arrears, then
    // recovery when money comes in.
    let mut spent = false;
    for n in 1..=12 {
        bank.now = on_due_date(n);
        if n == 4 && !spent {
            let left = bank.available();
            bank.run(&Command::Transfer(TransferRequest {
                id: TransferId::new_v7(),
                kind: TransferKind::Withdrawal,
                debit_account: account(),
                credit_account: SystemAccount::Funding.id(EUR),
                amount: eur(left),
                reference: None,
                hold_until: None,
            }))
            .expect("spent everything");
            spent = true;
            bank.turn();
            assert_eq!(bank.loan.status, ServiceStatus::InArrears);
            bank.invariants();
            bank.now = bank.loan.next_check_at.expect("retry");
            bank.turn();
            assert_eq!(bank.loan.status, ServiceStatus::InArrears);
            bank.fund(20_000_00);
            bank.now = bank.loan.next_check_at.expect("retry");
        }
        bank.turn();
        bank.invariants();
        let paid = bank.details().schedule.iter().filter(|i| i.is_paid()).count();
        assert_eq!(paid, usize::try_from(n).expect("n"));
    }
    assert_eq!(bank.loan.status, ServiceStatus::Closed);
    let interest = schedule::Schedule { instalments: plan.iter().map(to_instalment).collect() }.total_interest();
    assert_eq!(bank.balance(SystemAccount::InterestIncome.id(EUR)), interest.expect("interest").amount_minor());
    assert_eq!(bank.balance(receivable_account(loan_id())), 0);
    assert_eq!(bank.balance(SystemAccount::LoanFunding.id(EUR)), 0);
    bank.invariants();
    // A closed loan is never due again.
    bank.now = on_due_date(13);
    let t = bank.turn();
    assert!(t.effects.is_empty());
}

fn to_instalment(i: &bp_core::external::loan::LoanInstalment) -> schedule::Instalment {
    schedule::Instalment {
        number: i.number,
        due_on: i.due_on,
        principal: i.principal,
        interest: i.interest,
        total: i.total,
        outstanding_after: i.outstanding_after,
    }
}

#[test]
fn a_collection_that_races_a_payment_out_is_refused_whole_and_tried_again() {
    let loan = new_loan(1_200_00, 12);
    let mut bank = Bank::open(&loan, 0);
    bank.accept(approved(0));
    bank.now = on_due_date(1);
    // The worker read a balance that covered the instalment, then the customer spent it.
    let read = bank.available();
    let spend = TransferRequest {
        id: TransferId::new_v7(),
        kind: TransferKind::Withdrawal,
        debit_account: account(),
        credit_account: SystemAccount::Funding.id(EUR),
        amount: eur(read - 1),
        reference: None,
        hold_until: None,
    };
    bank.run(&Command::Transfer(spend)).expect("spent");
    let t = transition(&bank.loan, &LoanInput::Collect { available_minor: read }, bank.now, &policy(), 7).expect("t");
    let cmd = Command::ApplyService { id: bank.loan.id, expected_version: bank.loan.version, transition: Box::new(t) };
    assert_eq!(bank.run(&cmd).map(|_| ()), Err(LedgerError::InsufficientFunds { account: account() }));
    assert_eq!(bank.state.service_record(loan_id()).map(|r| r.status), Some(ServiceStatus::Active), "nothing written");
    // Read again, applied again: arrears.
    bank.turn();
    assert_eq!(bank.loan.status, ServiceStatus::InArrears);
    bank.invariants();
}

// ---------------------------------------------------------------------------------------------
// Property: random lives
// ---------------------------------------------------------------------------------------------

/// What happens in one month of a random life.
#[derive(Clone, Debug)]
enum Month {
    /// Enough money comes in before the due date.
    Pays,
    /// Nothing comes in: the instalment falls into arrears (money comes the month after).
    Short,
    /// Before the due date the customer repays this share (per mille) of the outstanding early.
    Repays(u16),
}

fn month() -> impl Strategy<Value = Month> {
    prop_oneof![6 => Just(Month::Pays), 2 => Just(Month::Short), 2 => (1u16..=1_000).prop_map(Month::Repays)]
}

fn life() -> impl Strategy<Value = (i64, u64, u32, i64, Vec<Month>)> {
    (1_00i64..=500_000_00, 0u64..=3_000_000_000, 1u32..=48, 0i64..=100).prop_flat_map(
        |(amount, rate_units, term, fee_per_mille)| {
            let months = proptest::collection::vec(month(), usize::try_from(term).unwrap_or(1) + 6);
            (Just(amount), Just(rate_units), Just(term), Just(amount * fee_per_mille / 1_000), months)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_lives_keep_the_books_closed_and_add_up((amount, rate_units, term, fee, months) in life()) {
        let annual_rate = rate(&format!("0.{rate_units:010}"));
        let loan = new_loan(amount, term);
        let mut bank = Bank::open(&loan, 0);
        bank.step(&LoanInput::Due).expect("due");
        let decision = LoanDecision::Approved { annual_rate, fee: eur(fee), term_months: term };
        bank.step(&LoanInput::Decided(decision)).expect("decided");
        if bank.loan.status == ServiceStatus::Rejected {
            // Too small a principal for the term: never disbursed.
            prop_assert!(schedule::annuity(eur(amount), annual_rate, term, day(2026, 4, 10)).is_err());
            return Ok(());
        }
        bank.step(&LoanInput::Accept).expect("accept");
        let plan = bank.details().schedule;
        let mut repaid_early = 0i64;
        let mut outstanding = bank.details().outstanding;
        for (n, month) in (1u32..).zip(&months) {
            if bank.loan.status == ServiceStatus::Closed {
                break;
            }
            let due = on_due_date(n);
            match month {
                Month::Pays => bank.fund(bank.details().schedule.iter().filter(|i| !i.is_paid()).take(2).map(|i| i.total.amount_minor()).sum()),
                Month::Short => {}
                Month::Repays(per_mille) => {
                    bank.now = due - TimeDelta::days(5);
                    // Arrears first, if any, then the repayment.
                    bank.fund(bank.details().schedule.iter().filter(|i| !i.is_paid()).take(3).map(|i| i.total.amount_minor()).sum());
                    bank.turn();
                    let owed = bank.details().outstanding.amount_minor();
                    let share = (i128::from(owed) * i128::from(*per_mille) / 1_000).max(1);
                    let amount = eur(i64::try_from(share).expect("share"));
                    bank.fund(amount.amount_minor());
                    let input = LoanInput::Repay { id: TransferId::new_v7(), amount };
                    match bank.step(&input) {
                        Ok(_) => repaid_early += amount.amount_minor(),
                        Err(LoanTransitionError::RemainderTooSmall | LoanTransitionError::InstalmentDue { .. } | LoanTransitionError::NotActive { .. }) => {}
                        Err(e) => prop_assert!(false, "repay {amount:?}: {e}"),
                    }
                }
            }
            bank.now = due;
            for _ in 0..2 {
                let before = bank.loan.clone();
                bank.turn();
                // The same turn again, on what was written, with the balance read again: nothing.
                let again = transition(&bank.loan, &LoanInput::Collect { available_minor: bank.available() }, bank.now, &policy(), 7).expect("again");
                prop_assert_eq!(&again.record, &bank.loan);
                prop_assert!(again.effects.is_empty());
                let now_owed = bank.details().outstanding;
                prop_assert!(now_owed.amount_minor() >= 0);
                prop_assert!(now_owed.amount_minor() <= outstanding.amount_minor(), "outstanding never grows");
                prop_assert_eq!(now_owed.is_zero(), bank.loan.status == ServiceStatus::Closed, "closed exactly when repaid");
                outstanding = now_owed;
                bank.invariants();
                if before == bank.loan {
                    break;
                }
                bank.now = bank.loan.next_check_at.unwrap_or(bank.now).max(bank.now);
            }
        }
        // Whatever is left is paid when the money comes.
        let mut n = u32::try_from(months.len()).expect("months");
        while bank.loan.status != ServiceStatus::Closed {
            n += 1;
            prop_assert!(n < 200, "the loan ends");
            bank.fund(bank.details().schedule.iter().filter(|i| !i.is_paid()).map(|i| i.total.amount_minor()).sum());
            bank.now = bank.now.max(on_due_date(n));
            bank.turn();
            bank.invariants();
        }
        let d = bank.details();
        let principal_paid: i64 = d.schedule.iter().filter(|i| i.is_paid()).map(|i| i.principal.amount_minor()).sum();
        let interest_paid: i64 = d.schedule.iter().filter(|i| i.is_paid()).map(|i| i.interest.amount_minor()).sum();
        prop_assert_eq!(principal_paid + repaid_early, amount, "principal repaid == principal disbursed");
        prop_assert_eq!(bank.balance(receivable_account(loan_id())), 0);
        prop_assert_eq!(bank.balance(SystemAccount::LoanFunding.id(EUR)), 0);
        prop_assert_eq!(bank.balance(SystemAccount::InterestIncome.id(EUR)), interest_paid);
        prop_assert_eq!(bank.balance(SystemAccount::Fees.id(EUR)), fee);
        if repaid_early == 0 {
            let scheduled = plan.iter().map(|i| i.interest.amount_minor()).sum::<i64>();
            prop_assert_eq!(interest_paid, scheduled, "interest paid == the schedule's interest");
            prop_assert!(d.schedule.iter().zip(&plan).all(|(a, b)| a.total == b.total && a.due_on == b.due_on));
        }
        prop_assert_eq!(d.repayments.iter().map(|r| r.amount.amount_minor()).sum::<i64>(), repaid_early);
    }
}
