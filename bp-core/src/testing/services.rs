//! The conformance suite of [`ServiceStore`]: external service records stored with the money
//! they hold, on every backend (the memory store in bp-core's tests, SQLite in bp-storage's).
//! A backend plugs in through a [`Factory`] whose value is a [`ServiceStore`]; the
//! [`services_conformance_tests!`](crate::services_conformance_tests) macro expands into one
//! `#[tokio::test]` per case. Every case ends with the ledger's invariants
//! ([`invariants::check`](crate::invariants::check)), the clearing account included.

// Amounts in the cases are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

use chrono::TimeDelta;

use super::conformance::Factory;
use super::fixtures::{ok, request as transfer_request};
use super::harness::{Harness, expect_rule};
use crate::Timestamp;
use crate::account::{Account, AccountOwner, SystemAccount};
use crate::command::Command;
use crate::error::LedgerError;
use crate::event::EventBody;
use crate::external::fx::{self, FxQuote, NewInternationalPayment, ProviderQuote, QuoteId};
use crate::external::incoming::IncomingCredit;
use crate::external::lifecycle::{self, Input, NewExternalPayment, Policy, Transition};
use crate::external::loan::{self, LoanDecision, LoanDetails, LoanInput, LoanPolicy, NewLoan};
use crate::external::rail::{RailAnswer, RailId};
use crate::external::{BackOff, BankIbans, ExternalAccount};
use crate::ids::{ServiceRecordId, TransferId};
use crate::money::{Currency, Money};
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use crate::service_store::{IncomingOutcome, ServiceQuery, ServiceStore};
use crate::store::{PAGE_LEN_MAX, Store};
use crate::transfer::{TransferKind, TransferState, VoidReason};

const EUR: Currency = Currency::EUR;
const SEPA: RailId = RailId::SepaCreditTransfer;

/// A [`Factory`] of service stores: the factory of this suite.
pub trait ServicesFactory: Factory<S: ServiceStore> {}

impl<F: Factory<S: ServiceStore>> ServicesFactory for F {}

/// Runs every case of the suite, one after the other, each on a fresh store from `factory`.
pub async fn run_all<F: ServicesFactory>(factory: &F) {
    crate::__services_conformance_cases!(@run_all factory);
}

/// The names of the cases, in the order [`run_all`] runs them.
pub const CASES: &[&str] = crate::__services_conformance_cases!(@names);

/// Expands into one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per case of the
/// services conformance suite, each on a fresh store from the factory expression (an
/// `impl ServicesFactory`, evaluated once per test).
#[macro_export]
macro_rules! services_conformance_tests {
    ($factory:expr) => {
        $crate::__services_conformance_cases!(@tests ($factory));
    };
}

/// The list of cases, written once; see [`conformance`](super::conformance).
#[doc(hidden)]
#[macro_export]
macro_rules! __services_conformance_cases {
    ($($mode:tt)*) => {
        $crate::__conformance! { $($mode)* "services" [$crate::testing::services]
            service_request_is_atomic
            service_transitions
            service_holds_outlive_the_sweeper
            service_due_and_stuck
            service_incoming_once
            service_history
            service_international_legs
            service_loan_disbursed_and_collected
        }
    };
}

fn policy() -> Policy {
    Policy { back_off: BackOff { first_ms: 1_000, max_ms: 60_000 }, stuck_after_s: 3_600 }
}

fn payee() -> ExternalAccount {
    ok("payee", ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", Some("COBADEFFXXX")))
}

/// The transition of a new payment of `amount_minor` from `account` at `now`.
fn new_payment(account: &Account, amount_minor: i64, now: Timestamp) -> Transition {
    let p = NewExternalPayment {
        customer: account.customer_id().expect("a customer account"),
        account: account.id,
        hold: TransferId::new_v7(),
        amount: Money::new(amount_minor, EUR),
        creditor: payee(),
        remittance: Some("invoice 42".to_owned()),
        rail: SEPA,
    };
    ok("request", lifecycle::request(&p, now))
}

async fn request<S: ServiceStore + ?Sized>(h: &Harness<S>, t: Transition) -> ServiceRecord {
    let cmd = Command::RequestService(Box::new(t));
    match ok("request", h.execute(cmd).await).outcome {
        crate::command::Outcome::Service(r) => *r,
        other => panic!("a service record, not {other:?}"),
    }
}

/// `record` after `input` at the harness's time, written.
async fn step<S: ServiceStore + ?Sized>(h: &Harness<S>, record: &ServiceRecord, input: Input) -> ServiceRecord {
    let t = ok("transition", lifecycle::transition(record, &input, h.now(), &policy(), 7));
    let cmd = Command::ApplyService { id: record.id, expected_version: record.version, transition: Box::new(t) };
    match ok("apply", h.execute(cmd).await).outcome {
        crate::command::Outcome::Service(r) => *r,
        other => panic!("a service record, not {other:?}"),
    }
}

fn hold_of(r: &ServiceRecord) -> TransferId {
    r.transfers[0]
}

async fn funded<S: ServiceStore + ?Sized>(h: &Harness<S>, name: &str, amount_minor: i64) -> Account {
    let a = h.customer_account(name, EUR).await;
    h.fund(&a, amount_minor).await;
    h.get_account(a.id).await
}

/// The request writes the hold, the record and the event together, or nothing.
pub async fn service_request_is_atomic<F: ServicesFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = funded(&h, "ada", 100_00).await;
    let t = new_payment(&a, 30_00, h.now());
    let outbox_before = h.outbox().await.len();
    let r = request(&h, t.clone()).await;
    assert_eq!((r.status, r.version, r.next_check_at), (ServiceStatus::Requested, 1, Some(h.now())));
    assert_eq!(ok("read", h.store().service_record(r.id).await).as_ref(), Some(&r));
    let hold = h.get_transfer(hold_of(&r)).await;
    assert_eq!((hold.state, hold.hold_until, hold.amount), (TransferState::Pending, None, r.amount));
    assert!(hold.awaits_external_party());
    let payer = h.get_account(a.id).await;
    assert_eq!((payer.posted_minor, payer.held_minor), (100_00, 30_00));
    let new: Vec<_> = h.outbox().await.into_iter().skip(outbox_before).map(|e| e.event.body).collect();
    assert!(
        matches!(new.as_slice(), [EventBody::TransferPending { .. }, EventBody::ServiceUpdated { status: ServiceStatus::Requested, service_id, .. }] if *service_id == r.id),
        "{new:?}"
    );
    // A retry of the same request replays; another request under the same record id conflicts.
    let replay = h.unchanged("replay", h.store().request(t.clone())).await;
    assert!(replay.replayed && replay.record == r);
    let mut other = t.clone();
    other.record.amount = Money::new(31_00, EUR);
    h.rejects(
        "same id, other request",
        h.store().request(other),
        LedgerError::IdempotencyConflict { id: r.id.to_string() },
    )
    .await;
    // Refused (insufficient funds): no hold, no record, no event.
    let too_much = new_payment(&a, 80_00, h.now());
    let (id, hold_id) = (too_much.record.id, hold_of(&too_much.record));
    h.rejects("too much", h.store().request(too_much), LedgerError::InsufficientFunds { account: a.id }).await;
    assert_eq!(ok("read", h.store().service_record(id).await), None, "no record without its hold");
    assert_eq!(ok("read", h.store().transfer(hold_id).await), None, "no hold without its record");
    h.check_invariants().await;
}

/// Accepting posts the hold to the clearing account; rejecting releases it; a stale version
/// is refused and changes nothing.
pub async fn service_transitions<F: ServicesFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = funded(&h, "ada", 100_00).await;
    let clearing = SEPA.clearing_account(EUR);
    let r = request(&h, new_payment(&a, 30_00, h.now())).await;
    let submitted = step(&h, &r, Input::Due).await;
    assert_eq!((submitted.status, submitted.version), (ServiceStatus::Submitted, 2));
    // A transition computed from the old version is refused.
    let stale =
        ok("transition", lifecycle::transition(&r, &Input::Answered(RailAnswer::Accepted), h.now(), &policy(), 1));
    let cmd = Command::ApplyService { id: r.id, expected_version: r.version, transition: Box::new(stale) };
    h.rejects("stale", h.execute(cmd), LedgerError::VersionConflict { expected: 1, actual: 2 }).await;
    h.advance_secs(1);
    let accepted = step(&h, &submitted, Input::Answered(RailAnswer::Accepted)).await;
    assert_eq!((accepted.status, accepted.version), (ServiceStatus::Accepted, 3));
    assert_eq!(h.get_transfer(hold_of(&r)).await.state, TransferState::Posted);
    let payer = h.get_account(a.id).await;
    assert_eq!((payer.posted_minor, payer.held_minor), (70_00, 0));
    assert_eq!(h.get_account(clearing).await.posted_minor, 30_00, "the money left through the clearing account");
    let settled = step(&h, &accepted, Input::Webhook(RailAnswer::Settled)).await;
    assert_eq!(settled.status, ServiceStatus::Settled);

    // Rejected: the hold is released, the available balance is back.
    let r2 = request(&h, new_payment(&a, 50_00, h.now())).await;
    assert_eq!(h.get_account(a.id).await.balances().available.amount_minor(), 20_00);
    let rejected = step(&h, &r2, Input::Answered(RailAnswer::Rejected { reason: None })).await;
    assert_eq!(rejected.status, ServiceStatus::Rejected);
    let hold = h.get_transfer(hold_of(&r2)).await;
    assert_eq!((hold.state, hold.void_reason), (TransferState::Failed, Some(VoidReason::Rejected)));
    let payer = h.get_account(a.id).await;
    assert_eq!((payer.posted_minor, payer.held_minor), (70_00, 0));
    assert_eq!(h.get_account(clearing).await.posted_minor, 30_00);
    h.check_invariants().await;
}

/// The hold sweeper never lists an external hold, and the ledger's own post and void refuse it.
pub async fn service_holds_outlive_the_sweeper<F: ServicesFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = funded(&h, "ada", 100_00).await;
    let r = request(&h, new_payment(&a, 30_00, h.now())).await;
    let hold = hold_of(&r);
    h.advance_secs(400 * 86_400);
    assert_eq!(ok("sweep", h.store().pending_expired(h.now(), PAGE_LEN_MAX).await), Vec::<TransferId>::new());
    assert_eq!(ok("sweep", h.ledger.expire_holds(h.now(), PAGE_LEN_MAX).await), 0);
    let held = LedgerError::HeldForExternalParty { transfer: hold };
    for reason in [VoidReason::Expired, VoidReason::Cancelled, VoidReason::Rejected] {
        h.rejects("void", h.execute(Command::VoidPending { id: hold, reason }), held.clone()).await;
    }
    h.rejects("post", h.execute(Command::PostPending { id: hold }), held).await;
    assert_eq!(h.get_account(a.id).await.held_minor, 30_00, "still held");
    // Only the lifecycle ends it, however late.
    let accepted = step(&h, &r, Input::Webhook(RailAnswer::Accepted)).await;
    assert_eq!(accepted.status, ServiceStatus::Accepted);
    assert_eq!(h.get_transfer(hold).await.state, TransferState::Posted);
    h.check_invariants().await;
}

/// `due` lists what is due, longest due first, bounded; `stuck` lists the stuck.
pub async fn service_due_and_stuck<F: ServicesFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = funded(&h, "ada", 100_00).await;
    let t0 = h.now();
    let mut records = Vec::new();
    for i in 0..4 {
        records.push(request(&h, new_payment(&a, 1_00 + i, h.now())).await);
        h.advance_secs(10);
    }
    let ids = |rs: Vec<ServiceRecord>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all: Vec<_> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids(ok("due", h.store().due(h.now(), 10).await)), all);
    assert_eq!(ids(ok("due", h.store().due(h.now(), 2).await)), all[..2].to_vec(), "bounded");
    assert_eq!(ids(ok("due", h.store().due(t0 + TimeDelta::seconds(15), 10).await)), all[..2].to_vec());
    // Submitted: due again at its next check, after the back-off.
    let submitted = step(&h, &records[0], Input::Due).await;
    let next = submitted.next_check_at.expect("scheduled");
    assert!(!ok("due", h.store().due(h.now(), 10).await).iter().any(|r| r.id == submitted.id));
    assert_eq!(ids(ok("due", h.store().due(next, 10).await)).last(), Some(&submitted.id));
    // Decided: never due again.
    step(&h, &records[1], Input::Webhook(RailAnswer::Rejected { reason: None })).await;
    assert!(!ok("due", h.store().due(h.now() + TimeDelta::days(1), 10).await).iter().any(|r| r.id == records[1].id));
    // Undecided past the bound: stuck, for operators, oldest first.
    assert!(ok("stuck", h.store().stuck(10).await).is_empty());
    h.advance_secs(3_600);
    let stuck_a = step(&h, &records[3], Input::Due).await;
    h.advance_secs(1);
    let stuck_b = step(&h, &records[2], Input::Due).await;
    assert!(stuck_a.stuck_since.is_some() && stuck_b.stuck_since.is_some());
    assert_eq!(ids(ok("stuck", h.store().stuck(10).await)), vec![stuck_a.id, stuck_b.id]);
    assert_eq!(ids(ok("stuck", h.store().stuck(1).await)), vec![stuck_a.id]);
    h.check_invariants().await;
}

/// An incoming payment delivered twice is credited once, and the second delivery says so.
pub async fn service_incoming_once<F: ServicesFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = funded(&h, "ada", 10_00).await;
    let bank = ok("bank", BankIbans::new("ES", "99990001"));
    let credit = IncomingCredit {
        end_to_end_id: "E2E-1".to_owned(),
        tx_id: Some("TX-1".to_owned()),
        debtor_agent: None,
        amount: Money::new(25_00, EUR),
        creditor_iban: bank.iban_of(a.number),
        debtor_name: Some("Max".to_owned()),
        remittance: Some("thanks".to_owned()),
    };
    let first = ok("credit", h.store().credit_incoming(&bank, SEPA, &credit).await);
    let IncomingOutcome::Credited { transfer, replayed: false } = first else { panic!("{first:?}") };
    h.track_transfers([transfer.id]);
    let second = h.unchanged("again", h.store().credit_incoming(&bank, SEPA, &credit)).await;
    assert_eq!(second, IncomingOutcome::Credited { transfer: transfer.clone(), replayed: true });
    assert_eq!(h.get_account(a.id).await.posted_minor, 35_00);
    assert_eq!(h.get_account(SEPA.clearing_account(EUR)).await.posted_minor, -25_00);
    let nobody = crate::account_number::AccountNumber::from_serial(999_999).expect("a number");
    let unknown =
        IncomingCredit { end_to_end_id: "E2E-2".to_owned(), creditor_iban: bank.iban_of(nobody), ..credit.clone() };
    let returned = h.unchanged("unknown", h.store().credit_incoming(&bank, SEPA, &unknown)).await;
    assert!(matches!(returned, IncomingOutcome::Returned { reason } if reason.as_str() == "AC01"));
    // The same payment's id for another account is a conflict, never a second credit.
    let forged = IncomingCredit { creditor_iban: bank.iban_of(nobody), ..credit };
    let nobodys = h.store().account_by_number(nobody).await;
    assert!(ok("read", nobodys).is_none());
    h.rejects(
        "forged",
        h.store().credit_incoming(&bank, SEPA, &forged),
        LedgerError::IdempotencyConflict { id: transfer.id.to_string() },
    )
    .await;
    h.check_invariants().await;
}

/// Every page of `customer`'s records for `query`, following the cursor.
async fn all_pages<S: ServiceStore + ?Sized>(
    store: &S,
    customer: crate::ids::CustomerId,
    mut query: ServiceQuery,
) -> Vec<ServiceRecord> {
    let mut out = Vec::new();
    for _ in 0..20 {
        let page = ok("page", store.service_records_of(customer, &query).await);
        assert!(page.items.len() <= usize::try_from(query.limit()).unwrap_or(usize::MAX));
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => query.before = Some(c),
            None => return out,
        }
    }
    panic!("more pages than records")
}

/// A customer's records, newest first, filtered, through the cursor: no record twice, none
/// skipped, another customer's never.
pub async fn service_history<F: ServicesFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = funded(&h, "ada", 1_000_00).await;
    let b = funded(&h, "bob", 1_000_00).await;
    let t0 = h.now();
    let mut mine = Vec::new();
    for i in 0..7 {
        let r = request(&h, new_payment(&a, 1_00 + i, h.now())).await;
        let r = if i % 3 == 0 { step(&h, &r, Input::Webhook(RailAnswer::Rejected { reason: None })).await } else { r };
        mine.push(r);
        request(&h, new_payment(&b, 1_00, h.now())).await;
        h.advance_secs(60);
    }
    let customer = a.customer_id().expect("customer");
    let newest_first: Vec<_> = mine.iter().rev().cloned().collect();
    assert_eq!(
        all_pages(h.store(), customer, ServiceQuery { limit: Some(3), ..ServiceQuery::default() }).await,
        newest_first
    );
    assert_eq!(
        all_pages(h.store(), customer, ServiceQuery { limit: Some(7), ..ServiceQuery::default() }).await,
        newest_first
    );
    let rejected: Vec<_> = newest_first.iter().filter(|r| r.status == ServiceStatus::Rejected).cloned().collect();
    let q = ServiceQuery { status: Some(ServiceStatus::Rejected), limit: Some(1), ..ServiceQuery::default() };
    assert_eq!(all_pages(h.store(), customer, q).await, rejected);
    let window: Vec<_> = newest_first
        .iter()
        .filter(|r| r.created_at >= t0 + TimeDelta::seconds(60) && r.created_at < t0 + TimeDelta::seconds(240))
        .cloned()
        .collect();
    assert_eq!(window.len(), 3);
    let q = ServiceQuery {
        kind: Some(ServiceKind::InterbankTransfer),
        from: Some(t0 + TimeDelta::seconds(60)),
        to: Some(t0 + TimeDelta::seconds(240)),
        limit: Some(2),
        ..ServiceQuery::default()
    };
    assert_eq!(all_pages(h.store(), customer, q).await, window);
    let q = ServiceQuery { kind: Some(ServiceKind::Loan), ..ServiceQuery::default() };
    assert!(all_pages(h.store(), customer, q).await.is_empty());
    expect_rule(
        "bad limit",
        ServiceQuery { limit: Some(PAGE_LEN_MAX + 1), ..ServiceQuery::default() }
            .validate()
            .map_err(crate::Error::from),
        &LedgerError::InvalidField { field: "limit", reason: "must be between 1 and 500" },
    );
    h.check_invariants().await;
}

/// A new international payment of `source_minor` EUR into USD at 1.0842 with a 4.50 EUR fee.
fn new_international(account: &Account, source_minor: i64, now: Timestamp) -> NewInternationalPayment {
    let quote = ProviderQuote {
        id: ok("quote id", QuoteId::parse("q-1")),
        source: Money::new(source_minor, EUR),
        target_currency: Currency::USD,
        rate: ok("rate", crate::rate::Rate::parse("1.0842")),
        fee: Money::new(4_50, EUR),
        expires_at: now + TimeDelta::minutes(1),
    };
    NewInternationalPayment {
        customer: account.customer_id().expect("a customer account"),
        account: account.id,
        hold: TransferId::new_v7(),
        quote: ok("quote", FxQuote::of(&quote)),
        creditor: ok("payee", ExternalAccount::parse("GB33BUKB20201555555555", "Jane Doe", None)),
        remittance: Some("rent".to_owned()),
    }
}

/// An international payment's legs (source amount, fee, target amount) are held with its
/// record in one write, or not at all; accepted, every leg posts and each currency still sums
/// to zero; rejected, every leg is released. Legs held while the customer answered SCA are
/// taken over.
pub async fn service_international_legs<F: ServicesFactory>(f: &F) {
    use crate::account::SystemAccount::{Fees, FxPosition, InternationalClearing};
    let h = Harness::new(f).await;
    let usd = Currency::USD;
    let a = funded(&h, "ada", 1_100_00).await;
    let p = new_international(&a, 1_000_00, h.now());
    let r = request(&h, ok("request", fx::request(&p, h.now()))).await;
    assert_eq!((r.kind, r.transfers.len()), (ServiceKind::InternationalTransfer, 3));
    for id in &r.transfers {
        let t = h.get_transfer(*id).await;
        assert_eq!((t.state, t.hold_until), (TransferState::Pending, None), "every leg is held");
    }
    let payer = h.get_account(a.id).await;
    assert_eq!((payer.posted_minor, payer.held_minor), (1_100_00, 1_004_50), "source and fee held");

    // Enough for the amount but not the fee: nothing at all is written.
    let b = funded(&h, "bea", 1_002_00).await;
    let short = new_international(&b, 1_000_00, h.now());
    h.rejects(
        "no money for the fee",
        h.store().request(ok("request", fx::request(&short, h.now()))),
        LedgerError::InsufficientFunds { account: b.id },
    )
    .await;
    assert_eq!(ok("read", h.store().transfer(short.hold).await), None, "no first leg without the rest");
    assert_eq!(ok("read", h.store().service_record(fx::request(&short, h.now()).expect("r").record.id).await), None);

    // Accepted by the rail: every leg posts.
    let submitted = step(&h, &r, Input::Due).await;
    let accepted = step(&h, &submitted, Input::Answered(RailAnswer::Accepted)).await;
    assert_eq!(accepted.status, ServiceStatus::Accepted);
    let h = &h;
    let balance = |id| async move { h.get_account(id).await.posted_minor };
    assert_eq!(balance(a.id).await, 95_50);
    assert_eq!(balance(FxPosition.id(EUR)).await, 1_000_00);
    assert_eq!(balance(Fees.id(EUR)).await, 4_50);
    assert_eq!(balance(FxPosition.id(usd)).await, -1_084_20);
    assert_eq!(balance(InternationalClearing.id(usd)).await, 1_084_20);
    for total in ok("totals", h.store().totals().await) {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }

    // Legs held while the customer answered SCA (with a deadline) are taken over; rejected by
    // the rail, every leg is released.
    h.fund(&a, 1_000_00).await;
    let p2 = new_international(&a, 900_00, h.now());
    let t2 = ok("request", fx::request(&p2, h.now()));
    for leg in fx::legs(&p2).into_iter().filter(|l| l.debit_account == a.id) {
        let pending = crate::transfer::TransferRequest { hold_until: Some(h.now() + TimeDelta::minutes(5)), ..leg };
        ok("pending leg", h.transfer(pending).await);
    }
    let r2 = request(h, t2).await;
    for id in &r2.transfers {
        assert_eq!(h.get_transfer(*id).await.hold_until, None, "taken over without its deadline");
    }
    assert_eq!(h.get_account(a.id).await.held_minor, 904_50);
    let rejected = step(h, &r2, Input::Answered(RailAnswer::Rejected { reason: None })).await;
    assert_eq!(rejected.status, ServiceStatus::Rejected);
    for id in &r2.transfers {
        let t = h.get_transfer(*id).await;
        assert_eq!((t.state, t.void_reason), (TransferState::Failed, Some(VoidReason::Rejected)));
    }
    let payer = h.get_account(a.id).await;
    assert_eq!((payer.posted_minor, payer.held_minor), (1_095_50, 0));
    assert_eq!(balance(FxPosition.id(usd)).await, -1_084_20, "the rejected legs left no trace");
    h.check_invariants().await;
}

/// `record` after loan input `input` at the harness's time, written.
async fn loan_step<S: ServiceStore + ?Sized>(
    h: &Harness<S>,
    record: &ServiceRecord,
    input: LoanInput,
) -> ServiceRecord {
    let t = ok("loan transition", loan::transition(record, &input, h.now(), &LoanPolicy::default(), 7));
    let cmd = Command::ApplyService { id: record.id, expected_version: record.version, transition: Box::new(t) };
    match ok("apply", h.execute(cmd).await).outcome {
        crate::command::Outcome::Service(r) => *r,
        other => panic!("a service record, not {other:?}"),
    }
}

/// A loan: the application holds nothing; acceptance opens the loan's receivable and posts the
/// disbursement, the receivable and the fee; an instalment is collected on its due date (principal
/// to the receivable, interest to interest income); a collection the balance no longer covers is
/// refused whole. Every leg passes the store's rules and the books stay closed.
pub async fn service_loan_disbursed_and_collected<F: ServicesFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = funded(&h, "ada", 10_00).await;
    let new = NewLoan {
        id: ServiceRecordId::new_v7(),
        customer: a.customer_id().expect("a customer account"),
        account: a.id,
        amount: Money::new(1_200_00, EUR),
        term_months: 12,
        purpose: "a cargo bike".to_owned(),
    };
    let r = request(&h, ok("apply", loan::apply(&new, h.now()))).await;
    assert_eq!((r.status, r.version, r.transfers.len()), (ServiceStatus::Requested, 1, 0));
    assert_eq!(h.get_account(a.id).await.held_minor, 0, "an application holds nothing");
    assert_eq!(ok("due", h.store().due(h.now(), 10).await).first().map(|d| d.id), Some(r.id));
    let r = loan_step(&h, &r, LoanInput::Due).await;
    assert_eq!(r.status, ServiceStatus::Submitted);
    let rate = ok("rate", crate::rate::Rate::parse("0.12"));
    let decision = LoanDecision::Approved { annual_rate: rate, fee: Money::new(25_00, EUR), term_months: 12 };
    let r = loan_step(&h, &r, LoanInput::Decided(decision)).await;
    assert_eq!(r.status, ServiceStatus::Offered);
    h.advance_secs(60);
    let r = loan_step(&h, &r, LoanInput::Accept).await;
    assert_eq!((r.status, r.transfers.len()), (ServiceStatus::Active, 3));
    let d = LoanDetails::of(&r).expect("a loan's details");
    let posted = |id| {
        let h = &h;
        async move { h.get_account(id).await.posted_minor }
    };
    assert_eq!(posted(a.id).await, 10_00 + 1_200_00 - 25_00);
    assert_eq!(posted(d.receivable).await, -1_200_00, "what the customer owes");
    assert_eq!(posted(SystemAccount::LoanFunding.id(EUR)).await, 0);
    assert_eq!(posted(SystemAccount::Fees.id(EUR)).await, 25_00);
    let receivable = h.get_account(d.receivable).await;
    assert_eq!(receivable.owner, AccountOwner::Bank { system: SystemAccount::LoanReceivable });
    for id in &r.transfers {
        assert_eq!(h.get_transfer(*id).await.state, TransferState::Posted);
    }
    // Not due before its date; collected on it.
    let first = d.schedule[0].clone();
    assert!(!ok("due", h.store().due(h.now(), 10).await).iter().any(|x| x.id == r.id));
    h.clock.set(loan::start_of(first.due_on) + TimeDelta::hours(1));
    assert!(ok("due", h.store().due(h.now(), 10).await).iter().any(|x| x.id == r.id));
    let available_minor = h.get_account(a.id).await.available_minor();
    let paid = loan_step(&h, &r, LoanInput::Collect { available_minor }).await;
    assert_eq!((paid.status, paid.transfers.len()), (ServiceStatus::Active, 5));
    assert_eq!(posted(a.id).await, 10_00 + 1_200_00 - 25_00 - first.total.amount_minor());
    assert_eq!(posted(d.receivable).await, -first.outstanding_after.amount_minor());
    assert_eq!(posted(SystemAccount::InterestIncome.id(EUR)).await, first.interest.amount_minor());
    // The balance read for the next instalment is gone by the write: refused whole.
    let second = LoanDetails::of(&paid).expect("details").schedule[1].clone();
    h.clock.set(loan::start_of(second.due_on) + TimeDelta::hours(1));
    let read = h.get_account(a.id).await.available_minor();
    let spend = transfer_request(TransferKind::Withdrawal, a.id, SystemAccount::Funding.id(EUR), read, EUR);
    ok("spend", h.transfer(spend).await);
    let stale = ok(
        "t",
        loan::transition(&paid, &LoanInput::Collect { available_minor: read }, h.now(), &LoanPolicy::default(), 7),
    );
    h.rejects(
        "collect",
        h.store().apply(paid.id, paid.version, stale),
        LedgerError::InsufficientFunds { account: a.id },
    )
    .await;
    let arrears = loan_step(&h, &paid, LoanInput::Collect { available_minor: 0 }).await;
    assert_eq!(arrears.status, ServiceStatus::InArrears);
    h.check_invariants().await;
}
