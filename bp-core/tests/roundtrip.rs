//! Every serialised type of bp-core survives a JSON round trip unchanged: through a string and
//! through a `serde_json::Value`, and serialises again to the same text. Values come from hand
//! (every optional field set, and none) and from a real ledger run on the memory store.

// Amounts are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

use std::fmt::Debug;
use std::sync::Arc;

use bp_core::account::{Account, AccountKind, AccountOwner, AccountStatus, Balances, NewAccount, SystemAccount};
use bp_core::clock::ManualClock;
use bp_core::command::{Command, Executed, Outcome};
use bp_core::customer::{BiometricEnrolment, Contact, Customer, CustomerUpdate, KycStatus, NewCustomer, Party};
use bp_core::event::{EVENT_VERSION, Event, EventBody};
use bp_core::external::ReasonCode;
use bp_core::memory::MemoryStore;
use bp_core::service::current_account;
use bp_core::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use bp_core::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page, Store};
use bp_core::testing::fixtures::{company, json_map, person};
use bp_core::transfer::{Direction, Posting, Transfer, TransferKind, TransferRequest, TransferState, VoidReason};
use bp_core::{AccountId, Currency, CustomerId, EventId, Ledger, Money, ServiceRecordId, Timestamp, TransferId};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(what: &str, value: &T) {
    let text = serde_json::to_string(value).unwrap_or_else(|e| panic!("{what}: serialise: {e}"));
    let back: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: deserialise {text}: {e}"));
    assert_eq!(&back, value, "{what}: through the string {text}");
    assert_eq!(serde_json::to_string(&back).ok().as_deref(), Some(text.as_str()), "{what}: serialises stably");
    let tree = serde_json::to_value(value).unwrap_or_else(|e| panic!("{what}: to_value: {e}"));
    let back: T = serde_json::from_value(tree.clone()).unwrap_or_else(|e| panic!("{what}: from_value {tree}: {e}"));
    assert_eq!(&back, value, "{what}: through the value {tree}");
    let pretty = serde_json::to_string_pretty(value).unwrap_or_else(|e| panic!("{what}: pretty: {e}"));
    let back: T = serde_json::from_str(&pretty).unwrap_or_else(|e| panic!("{what}: deserialise pretty: {e}"));
    assert_eq!(&back, value, "{what}: through pretty JSON");
}

fn at(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_767_225_600 + secs, 123_456_000).expect("a valid time")
}

/// The person fixture, every optional field set, with text and extra fields that are hard to
/// serialise: quotes, non-ASCII letters, a line separator, null, large and nested values.
fn new_person() -> NewCustomer {
    let mut req = person("ada.l");
    if let Party::Person(profile) = &mut req.party {
        profile.family_name = "Lovelace \"Byron\" ünïcødé".to_owned();
    }
    req.contact.address = Some("Calle Mayor 1\u{2028}Madrid".to_owned());
    req.extra = json_map(serde_json::json!({
        "null": null, "n": 1, "big": 12_345_678_901_234_567_i64, "neg": -3, "s": "x",
        "nested": { "a": [1, "two", { "three": true }] }
    }));
    req
}

/// The company fixture with none of the optional fields set.
fn new_company() -> NewCustomer {
    NewCustomer { contact: Contact::default(), ..company("acme") }
}

fn customer_of(req: &NewCustomer, biometric: BiometricEnrolment) -> Customer {
    Customer { biometric, version: 7, updated_at: at(90), ..Customer::opened(req, at(0)) }
}

fn transfer(state: TransferState, full: bool) -> Transfer {
    Transfer {
        id: TransferId::new_v7(),
        kind: TransferKind::International,
        debit_account: AccountId::new_v7(),
        credit_account: SystemAccount::InternationalClearing.id(Currency::KWD),
        amount: Money::new(1_234_567, Currency::KWD),
        reference: full.then(|| "Invoice 42 – ✓".to_owned()),
        state,
        hold_until: full.then(|| at(3_600)),
        void_reason: (full && state == TransferState::Voided).then_some(VoidReason::Expired),
        created_at: at(1),
        finished_at: full.then(|| at(2)),
    }
}

fn balances(posted: i64, held: i64, currency: Currency) -> Balances {
    Balances {
        posted: Money::new(posted, currency),
        held: Money::new(held, currency),
        available: Money::new(posted - held, currency),
    }
}

fn event(body: EventBody) -> Event {
    let account_id = AccountId::new_v7();
    Event { account_id, seq: 9, version: EVENT_VERSION, at: at(5), body }
}

fn posting(reference: Option<String>) -> Posting {
    Posting {
        seq: 12,
        account_id: AccountId::new_v7(),
        transfer_id: TransferId::new_v7(),
        kind: TransferKind::Fee,
        direction: Direction::Debit,
        amount: Money::new(150, Currency::JPY),
        balance_after: Money::new(-150, Currency::JPY),
        counterparty: SystemAccount::Fees.id(Currency::JPY),
        reference,
        posted_at: at(7),
    }
}

#[test]
fn customers_and_their_requests() {
    for req in [new_person(), new_company()] {
        roundtrip("NewCustomer", &req);
        roundtrip("Customer", &customer_of(&req, BiometricEnrolment::NotEnrolled));
        let enrolled = BiometricEnrolment::Enrolled { device_id: "device-1".to_owned(), enrolled_at: at(3) };
        roundtrip("Customer (enrolled)", &customer_of(&req, enrolled));
    }
}

#[test]
fn customer_updates() {
    let updates = [
        ("empty", CustomerUpdate::default()),
        (
            "every field",
            CustomerUpdate {
                contact: Some(Contact { email: Some("a@b.example".to_owned()), phone: None, address: None }),
                photo_ref: Some(Some("photos/new.png".to_owned())),
                biometric: Some(BiometricEnrolment::Enrolled { device_id: "d".to_owned(), enrolled_at: at(4) }),
                kyc: Some(KycStatus::Rejected),
                documents: Some(Vec::new()),
                extra: Some(json_map(serde_json::json!({ "remove": null, "set": 1 }))),
            },
        ),
        ("photo removed", CustomerUpdate { photo_ref: Some(None), ..CustomerUpdate::default() }),
    ];
    for (what, update) in updates {
        roundtrip(&format!("CustomerUpdate ({what})"), &update);
        let cmd = Command::UpdateCustomer { id: CustomerId::new_v7(), expected_version: Some(3), update };
        roundtrip(&format!("Command::UpdateCustomer ({what})"), &cmd);
    }
}

#[test]
fn accounts() {
    let owners = [
        AccountOwner::Customer { customer_id: CustomerId::new_v7() },
        AccountOwner::Bank { system: SystemAccount::LoanFunding },
    ];
    for (owner, status) in owners.into_iter().zip([AccountStatus::Frozen, AccountStatus::Active]) {
        let account = Account {
            id: AccountId::new_v7(),
            number: bp_core::account_number::AccountNumber::from_serial(1_234_567_890).expect("a serial"),
            owner,
            kind: AccountKind::Savings,
            currency: Currency::CHF,
            status,
            posted_minor: i64::MIN,
            held_minor: i64::MAX,
            overdraft_limit_minor: 5_000,
            last_event_seq: u64::MAX,
            version: 3,
            opened_at: at(0),
        };
        roundtrip("Account", &account);
    }
    roundtrip("NewAccount", &current_account(AccountId::new_v7(), CustomerId::new_v7(), Currency::USD));
    roundtrip("Balances", &balances(-5, 10, Currency::EUR));
}

#[test]
fn transfers_postings_and_requests() {
    for state in [TransferState::Pending, TransferState::Posted, TransferState::Voided, TransferState::Failed] {
        roundtrip("Transfer", &transfer(state, true));
        roundtrip("Transfer (no optional fields)", &transfer(state, false));
    }
    let req = TransferRequest {
        id: TransferId::new_v7(),
        kind: TransferKind::Loan,
        debit_account: SystemAccount::LoanFunding.id(Currency::EUR),
        credit_account: AccountId::new_v7(),
        amount: Money::new(i64::MAX, Currency::EUR),
        reference: Some("disbursement".to_owned()),
        hold_until: Some(at(60)),
    };
    roundtrip("TransferRequest", &req);
    roundtrip("TransferRequest (bare)", &TransferRequest { reference: None, hold_until: None, ..req });
    roundtrip("Posting", &posting(Some("fee".to_owned())));
    roundtrip("Posting (no reference)", &posting(None));
}

#[test]
fn events_of_every_type() {
    let eur = Currency::EUR;
    let bodies = [
        EventBody::AccountOpened { balances: balances(0, 0, eur) },
        EventBody::AccountStatusChanged { status: AccountStatus::Closed },
        EventBody::TransferPosted {
            transfer_id: TransferId::new_v7(),
            kind: TransferKind::Internal,
            direction: Direction::Credit,
            amount: Money::new(1, eur),
            counterparty: AccountId::new_v7(),
            balances: balances(1, 0, eur),
        },
        EventBody::TransferPending {
            transfer_id: TransferId::new_v7(),
            kind: TransferKind::Interbank,
            amount: Money::new(7, eur),
            counterparty: SystemAccount::InterbankClearing.id(eur),
            balances: balances(10, 7, eur),
        },
        EventBody::TransferVoided {
            transfer_id: TransferId::new_v7(),
            reason: VoidReason::Rejected,
            amount: Money::new(7, eur),
            balances: balances(10, 0, eur),
        },
    ];
    for body in bodies {
        let what = body.type_name();
        let e = event(body);
        roundtrip(what, &e);
        let tree = serde_json::to_value(&e).expect("serialise");
        assert_eq!(tree["type"], what, "the wire type of {what}");
        assert_eq!(tree["id"], e.id().to_string(), "{what}: the id comes first and is derived");
        let text = serde_json::to_string(&e).expect("serialise");
        assert!(text.starts_with(&format!(r#"{{"id":"{}","account_id":"#, e.id())), "{what}: {text}");
        // An id that its account and seq do not derive is refused: the event was not written by
        // a bp ledger, or was changed since (another seq's id, then an unrelated one).
        for id in [EventId::derive(e.account_id, e.seq + 1).to_string(), uuid::Uuid::now_v7().to_string()] {
            let mut forged = tree.clone();
            forged["id"] = id.into();
            let err = serde_json::from_value::<Event>(forged).expect_err("a forged id");
            assert!(err.to_string().contains("id is not the one its account_id and seq derive"), "{what}: {err}");
        }
        roundtrip("OutboxEntry", &OutboxEntry { position: 17, event: e });
    }
}

#[test]
fn queries_pages_totals_and_service_records() {
    roundtrip("HistoryQuery (empty)", &HistoryQuery::default());
    let full = HistoryQuery {
        from: Some(at(0)),
        to: Some(at(86_400)),
        direction: Some(Direction::Debit),
        amount_min_minor: Some(0),
        amount_max_minor: Some(i64::MAX),
        kind: Some(TransferKind::Withdrawal),
        before_seq: Some(u64::MAX),
        limit: Some(PAGE_LEN_MAX),
    };
    roundtrip("HistoryQuery (every filter)", &full);
    roundtrip(
        "Page (with cursor)",
        &Page { items: vec![posting(None), posting(Some("x".to_owned()))], next_cursor: Some(12) },
    );
    roundtrip("Page (last)", &Page::<Posting> { items: Vec::new(), next_cursor: None });
    roundtrip("CurrencyTotal", &CurrencyTotal { currency: Currency::JPY, posted_minor: 0, accounts: 3 });
    roundtrip(
        "CurrencyTotal",
        &CurrencyTotal { currency: Currency::EUR, posted_minor: i128::from(i64::MIN), accounts: 1 },
    );
    // Beyond 64 bits a total only fits the text form (a `serde_json::Value` number is 64-bit).
    let wide = CurrencyTotal { currency: Currency::EUR, posted_minor: i128::from(i64::MIN) * 4, accounts: 9 };
    let text = serde_json::to_string(&wide).expect("serialise");
    assert_eq!(serde_json::from_str::<CurrencyTotal>(&text).expect("deserialise"), wide, "{text}");
    for (kind, status) in [
        (ServiceKind::InterbankTransfer, ServiceStatus::Requested),
        (ServiceKind::InternationalTransfer, ServiceStatus::Submitted),
        (ServiceKind::InterbankTransfer, ServiceStatus::Unknown),
        (ServiceKind::Loan, ServiceStatus::Accepted),
        (ServiceKind::InterbankTransfer, ServiceStatus::Settled),
        (ServiceKind::Loan, ServiceStatus::Rejected),
    ] {
        let record = ServiceRecord {
            id: ServiceRecordId::new_v7(),
            customer_id: CustomerId::new_v7(),
            kind,
            status,
            account_id: AccountId::new_v7(),
            amount: Money::new(99_999, Currency::GBP),
            transfers: vec![TransferId::new_v7(), TransferId::new_v7()],
            checks: 3,
            next_check_at: (status == ServiceStatus::Unknown).then(|| at(2)),
            stuck_since: (status == ServiceStatus::Unknown).then(|| at(1)),
            reason: (status == ServiceStatus::Rejected).then(|| ReasonCode::parse("AC01").expect("code")),
            details: json_map(serde_json::json!({ "iban": "DE89370400440532013000", "fx": { "rate": "1.0842" } })),
            version: 3,
            created_at: at(0),
            updated_at: at(1),
        };
        roundtrip("ServiceRecord", &record);
    }
}

#[test]
fn commands_and_their_answers() {
    let commands = [
        Command::OpenCustomer(Box::new(new_person())),
        Command::OpenCustomer(Box::new(new_company())),
        Command::UpdateCustomer { id: CustomerId::new_v7(), expected_version: None, update: CustomerUpdate::default() },
        Command::OpenAccount(NewAccount {
            id: AccountId::new_v7(),
            customer_id: CustomerId::new_v7(),
            kind: AccountKind::Savings,
            currency: Currency::JPY,
            overdraft_limit_minor: 100,
        }),
        Command::SetAccountStatus { id: AccountId::new_v7(), status: AccountStatus::Frozen },
        Command::Transfer(TransferRequest {
            id: TransferId::new_v7(),
            kind: TransferKind::Deposit,
            debit_account: SystemAccount::Funding.id(Currency::EUR),
            credit_account: AccountId::new_v7(),
            amount: Money::new(1, Currency::EUR),
            reference: None,
            hold_until: None,
        }),
        Command::PostPending { id: TransferId::new_v7() },
        Command::VoidPending { id: TransferId::new_v7(), reason: VoidReason::Cancelled },
    ];
    for cmd in &commands {
        roundtrip("Command", cmd);
    }
    let outcomes = [
        Outcome::Customer(Box::new(customer_of(&new_person(), BiometricEnrolment::NotEnrolled))),
        Outcome::Account(Account {
            id: AccountId::new_v7(),
            number: SystemAccount::Fees.number(Currency::EUR),
            owner: AccountOwner::Bank { system: SystemAccount::Fees },
            kind: AccountKind::System,
            currency: Currency::EUR,
            status: AccountStatus::Active,
            posted_minor: 10,
            held_minor: 0,
            overdraft_limit_minor: 0,
            last_event_seq: 1,
            version: 1,
            opened_at: at(0),
        }),
        Outcome::Transfer(transfer(TransferState::Posted, true)),
    ];
    for (outcome, replayed) in outcomes.into_iter().zip([false, true, false]) {
        roundtrip("Outcome", &outcome);
        roundtrip("Executed", &Executed { outcome, replayed });
    }
}

/// Everything a real ledger run writes and answers survives the round trip too.
#[tokio::test]
async fn records_of_a_real_run() {
    let clock = Arc::new(ManualClock::new(at(0)));
    let store = Arc::new(MemoryStore::with_clock(Arc::clone(&clock) as Arc<dyn bp_core::clock::Clock>));
    let ledger = Ledger::new(Arc::clone(&store));
    let ada = ledger.open_customer(new_person()).await.expect("open");
    let acme = ledger.open_customer(new_company()).await.expect("open");
    let a = ledger.open_account(current_account(AccountId::new_v7(), ada.id, Currency::EUR)).await.expect("open");
    let b = ledger.open_account(current_account(AccountId::new_v7(), acme.id, Currency::EUR)).await.expect("open");
    ledger.fund(TransferId::new_v7(), a.id, Money::new(100_00, Currency::EUR)).await.expect("fund");
    clock.set(at(60));
    let paid = ledger
        .internal_transfer(TransferId::new_v7(), a.id, b.id, Money::new(12_34, Currency::EUR), Some("rent".to_owned()))
        .await
        .expect("pay");
    let hold = |amount| TransferRequest {
        id: TransferId::new_v7(),
        kind: TransferKind::Interbank,
        debit_account: a.id,
        credit_account: SystemAccount::InterbankClearing.id(Currency::EUR),
        amount: Money::new(amount, Currency::EUR),
        reference: None,
        hold_until: Some(at(3_600)),
    };
    let (p1, p2, p3) = (hold(1_00), hold(2_00), hold(3_00));
    for p in [&p1, &p2, &p3] {
        ledger.transfer(p.clone()).await.expect("hold");
    }
    ledger.post_pending(p1.id).await.expect("post");
    ledger.void_pending(p2.id, VoidReason::Cancelled).await.expect("void");
    ledger.void_pending(p3.id, VoidReason::Rejected).await.expect("reject");
    ledger.set_account_status(b.id, AccountStatus::Frozen).await.expect("freeze");
    let update = CustomerUpdate { photo_ref: Some(None), kyc: Some(KycStatus::Pending), ..CustomerUpdate::default() };
    ledger.update_customer(ada.id, None, update).await.expect("update");

    for id in [ada.id, acme.id] {
        roundtrip("stored Customer", &store.customer(id).await.expect("read").expect("exists"));
    }
    for id in [a.id, b.id, SystemAccount::Funding.id(Currency::EUR), SystemAccount::InterbankClearing.id(Currency::EUR)]
    {
        roundtrip("stored Account", &store.account(id).await.expect("read").expect("exists"));
        roundtrip(
            "history Page",
            &ledger.history(id, &HistoryQuery { limit: Some(2), ..HistoryQuery::default() }).await.expect("history"),
        );
    }
    for id in [paid.transfer.id, p1.id, p2.id, p3.id] {
        roundtrip("stored Transfer", &store.transfer(id).await.expect("read").expect("exists"));
    }
    let outbox = store.outbox_after(0, PAGE_LEN_MAX).await.expect("outbox");
    let mut types: Vec<&str> = outbox.iter().map(|e| e.event.body.type_name()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), 5, "the run writes every event type: {types:?}");
    for entry in &outbox {
        roundtrip("stored OutboxEntry", entry);
    }
    for t in store.totals().await.expect("totals") {
        roundtrip("stored CurrencyTotal", &t);
    }
    let replay = store.execute(Command::PostPending { id: p1.id }).await.expect("replay");
    roundtrip("a replay's Executed", &replay);
}

#[test]
fn problems_with_and_without_the_members_at_fault() {
    use bp_core::api::{Problem, ProblemError, json_pointer};
    let mut problem = Problem {
        type_uri: "urn:bp:problem:invalid-request".to_owned(),
        title: "Invalid request".to_owned(),
        status: 422,
        detail: Some("the amount must be positive".to_owned()),
        instance: None,
        errors: Vec::new(),
    };
    roundtrip("a problem without errors", &problem);
    let text = serde_json::to_value(&problem).expect("json");
    assert!(text.get("errors").is_none(), "an empty list is not sent: {text}");
    problem.errors = vec![
        ProblemError::at_pointer("/amount", "the amount must be positive"),
        ProblemError::at_parameter("Idempotency-Key", "must be printable ASCII"),
    ];
    roundtrip("a problem with errors", &problem);
    assert_eq!(
        serde_json::to_value(&problem).expect("json")["errors"],
        serde_json::json!([
            { "pointer": "/amount", "detail": "the amount must be positive" },
            { "parameter": "Idempotency-Key", "detail": "must be printable ASCII" },
        ])
    );
    assert_eq!(problem.errors[0].member(), Some("amount"));
    assert_eq!(problem.errors[1].member(), Some("Idempotency-Key"));
    // A client reads the problems of a server that does not send `errors` yet.
    let old: Problem = serde_json::from_str(r#"{"type":"urn:bp:problem:x","title":"t","status":400}"#).expect("old");
    assert!(old.errors.is_empty());
    assert_eq!(json_pointer(["contact", "email"]), "/contact/email");
    assert_eq!(json_pointer(["a/b", "c~d"]), "/a~1b/c~0d", "RFC 6901 escapes");
    assert_eq!(json_pointer([]), "");
}
