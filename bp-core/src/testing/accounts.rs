//! Cases for accounts: opening, numbers, idempotency, listing, freezing and closing.

use std::collections::HashSet;

use chrono::TimeDelta;

use super::StoreFactory;
use super::fixtures::{ok, request};
use super::harness::{Harness, expect_rule, invalid};
use crate::account::{
    Account, AccountKind, AccountOwner, AccountStatus, NewAccount, SYSTEM_SERIAL_BASE, SystemAccount,
};
use crate::account_number::AccountNumber;
use crate::command::{Command, Executed, Outcome};
use crate::error::LedgerError;
use crate::event::{EVENT_VERSION, Event, EventBody};
use crate::ids::{AccountId, CustomerId};
use crate::money::{Currency, Money};
use crate::store::Store;
use crate::transfer::{TransferKind, TransferRequest, VoidReason};

fn new_account(customer: CustomerId, kind: AccountKind, currency: Currency, overdraft: i64) -> NewAccount {
    NewAccount { id: AccountId::new_v7(), customer_id: customer, kind, currency, overdraft_limit_minor: overdraft }
}

/// Opens accounts: numbers with valid check digits, the opening event, replays, conflicts, every
/// rejected request, and `accounts_of` oldest first.
pub async fn account_open<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let ada = h.customer("ada").await;
    let bob = h.customer("bob").await;

    let req1 = new_account(ada.id, AccountKind::Current, Currency::EUR, 0);
    let a1 = ok("open current account", h.try_open_account(req1.clone()).await);
    let t0 = h.now();
    h.advance_secs(60);
    let req2 = new_account(ada.id, AccountKind::Savings, Currency::EUR, 0);
    let a2 = ok("open savings account", h.try_open_account(req2.clone()).await);
    let req3 = new_account(ada.id, AccountKind::Current, Currency::USD, 5_000);
    let a3 = ok("open account with overdraft", h.try_open_account(req3.clone()).await);
    let req4 = new_account(bob.id, AccountKind::Current, Currency::JPY, 0);
    let b1 = ok("open bob's account", h.try_open_account(req4.clone()).await);

    for (a, req, at) in [(&a1, &req1, t0), (&a2, &req2, h.now()), (&a3, &req3, h.now()), (&b1, &req4, h.now())] {
        assert_eq!(a.id, req.id);
        assert_eq!(a.owner, AccountOwner::Customer { customer_id: req.customer_id });
        assert_eq!(a.customer_id(), Some(req.customer_id));
        assert!(!a.is_system());
        assert_eq!((a.kind, a.currency, a.overdraft_limit_minor), (req.kind, req.currency, req.overdraft_limit_minor));
        assert_eq!(a.status, AccountStatus::Active);
        assert_eq!((a.posted_minor, a.held_minor), (0, 0), "a new account is empty");
        assert_eq!(a.last_event_seq, 1, "opening is the account's first event");
        assert_eq!(a.opened_at, at);
        assert!(a.number.serial() < SYSTEM_SERIAL_BASE, "customer serials stay below the bank's range");
        assert_eq!(AccountNumber::parse(&a.number.to_string()), Ok(a.number), "check digits must verify");
        assert_eq!(AccountNumber::parse(&a.number.formatted()), Ok(a.number));
        assert_eq!(ok("read back", h.store().account(a.id).await).as_ref(), Some(a));
        let zero = Money::zero(a.currency);
        let expected = Event {
            account_id: a.id,
            seq: 1,
            version: EVENT_VERSION,
            at,
            body: EventBody::AccountOpened {
                balances: crate::account::Balances { posted: zero, held: zero, available: zero },
            },
        };
        assert_eq!(h.events(a.id).await, vec![expected], "the account.opened event");
        assert!(h.history_all(a.id, &Default::default()).await.is_empty());
    }
    let numbers: HashSet<AccountNumber> = [&a1, &a2, &a3, &b1].iter().map(|a| a.number).collect();
    assert_eq!(numbers.len(), 4, "account numbers must be distinct");

    // Oldest first: by opening time, then by number.
    let listed = ok("accounts_of", h.store().accounts_of(ada.id).await);
    assert_eq!(listed, vec![a1.clone(), a2.clone(), a3.clone()], "accounts_of lists oldest first");
    assert_eq!(ok("accounts_of", h.ledger.accounts_of(bob.id).await), vec![b1.clone()]);

    // By number: the payee lookup of a payment.
    for a in [&a1, &a2, &a3, &b1] {
        assert_eq!(ok("account_by_number", h.store().account_by_number(a.number).await).as_ref(), Some(a));
    }
    let eur_fees = SystemAccount::Fees.number(Currency::EUR);
    let unused = AccountNumber::from_serial(9_899_999_999).expect("a valid serial");
    assert_eq!(ok("unknown number", h.store().account_by_number(unused).await), None);
    assert!(
        ok("system number", h.store().account_by_number(eur_fees).await)
            .is_none_or(|a| a.id == SystemAccount::Fees.id(Currency::EUR)),
        "a system account's number finds that account or nothing before it opened"
    );

    // Replays return the original account and change nothing.
    h.advance_secs(60);
    let replay = h.unchanged("replay open", h.execute(Command::OpenAccount(req1.clone()))).await;
    assert_eq!(replay, Executed { outcome: Outcome::Account(a1.clone()), replayed: true });
    assert_eq!(h.unchanged("replay through the façade", h.ledger.open_account(req3.clone())).await, a3);

    // The same id with another request.
    let conflict = LedgerError::IdempotencyConflict { id: req1.id.to_string() };
    for (what, req) in [
        ("other currency", NewAccount { currency: Currency::USD, ..req1.clone() }),
        ("other kind", NewAccount { kind: AccountKind::Savings, ..req1.clone() }),
        ("other overdraft", NewAccount { overdraft_limit_minor: 1, ..req1.clone() }),
        ("other customer", NewAccount { customer_id: bob.id, ..req1.clone() }),
    ] {
        h.rejects(what, h.ledger.open_account(req), conflict.clone()).await;
    }

    // Invalid requests.
    let unknown_customer = CustomerId::new_v7();
    let req = new_account(unknown_customer, AccountKind::Current, Currency::EUR, 0);
    h.track_account(req.id);
    h.rejects("unknown customer", h.ledger.open_account(req), LedgerError::CustomerNotFound(unknown_customer)).await;
    let req = new_account(ada.id, AccountKind::Current, Currency::EUR, -1);
    h.track_account(req.id);
    h.rejects("negative overdraft", h.ledger.open_account(req), invalid("overdraft_limit")).await;
    let req = new_account(ada.id, AccountKind::System, Currency::EUR, 0);
    h.track_account(req.id);
    h.rejects("kind System", h.ledger.open_account(req), invalid("kind")).await;
    let req = NewAccount {
        id: SystemAccount::Fees.id(Currency::EUR),
        ..new_account(ada.id, AccountKind::Current, Currency::EUR, 0)
    };
    h.track_account(req.id);
    h.rejects("a system account's id", h.ledger.open_account(req), invalid("kind")).await;

    let unknown = AccountId::new_v7();
    assert_eq!(ok("unknown account", h.store().account(unknown).await), None);
    expect_rule(
        "façade read of an unknown account",
        h.ledger.account(unknown).await,
        &LedgerError::AccountNotFound(unknown),
    );

    // More accounts, opened at one instant, still list in opening order.
    let mut expected = vec![b1];
    for _ in 0..10 {
        expected.push(h.account(bob.id, Currency::JPY, 0).await);
    }
    let listed = ok("accounts_of", h.store().accounts_of(bob.id).await);
    assert_eq!(listed, expected, "accounts opened at the same instant list in opening order");
    let numbers: HashSet<AccountNumber> = listed.iter().map(|a| a.number).collect();
    assert_eq!(numbers.len(), listed.len(), "account numbers must be distinct");
    h.check_invariants().await;
}

fn pending(
    debit: &Account,
    credit: AccountId,
    kind: TransferKind,
    amount: i64,
    until: crate::Timestamp,
) -> TransferRequest {
    TransferRequest { hold_until: Some(until), ..request(kind, debit.id, credit, amount, debit.currency) }
}

/// Freezes, unfreezes and closes accounts: what each status allows, and the rules of closing.
pub async fn account_status<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", Currency::EUR).await;
    let b = h.customer_account("bob", Currency::EUR).await;
    h.fund(&a, 10_000).await;
    let clearing = SystemAccount::InterbankClearing.id(Currency::EUR);

    // Freeze.
    h.advance_secs(10);
    let before = h.get_account(a.id).await;
    let frozen = ok("freeze", h.ledger.set_account_status(a.id, AccountStatus::Frozen).await);
    assert_eq!(frozen.status, AccountStatus::Frozen);
    assert_eq!(frozen.last_event_seq, before.last_event_seq + 1);
    assert!(frozen.version > before.version);
    assert_eq!((frozen.posted_minor, frozen.held_minor), (before.posted_minor, before.held_minor));
    assert_eq!(h.get_account(a.id).await, frozen);
    let last = h.events(a.id).await.pop().expect("an event");
    assert_eq!(last.seq, frozen.last_event_seq);
    assert_eq!(last.at, h.now());
    assert_eq!(last.body, EventBody::AccountStatusChanged { status: AccountStatus::Frozen });
    let replay = h
        .unchanged("freeze again", h.execute(Command::SetAccountStatus { id: a.id, status: AccountStatus::Frozen }))
        .await;
    assert_eq!(replay, Executed { outcome: Outcome::Account(frozen.clone()), replayed: true });

    let not_active = LedgerError::AccountNotActive { account: a.id, status: AccountStatus::Frozen };
    h.rejects("debit a frozen account", h.pay(&a, b.id, 100), not_active.clone()).await;
    h.rejects("credit a frozen account", h.pay(&b, a.id, 100), not_active.clone()).await;
    let deposit = request(TransferKind::Deposit, SystemAccount::Funding.id(Currency::EUR), a.id, 100, Currency::EUR);
    h.rejects("fund a frozen account", h.transfer(deposit), not_active.clone()).await;
    let hold = pending(&a, clearing, TransferKind::Interbank, 100, h.now() + TimeDelta::hours(1));
    h.rejects("hold on a frozen account", h.transfer(hold), not_active.clone()).await;

    // Unfreeze: money moves again.
    let active = ok("unfreeze", h.ledger.set_account_status(a.id, AccountStatus::Active).await);
    assert_eq!(active.status, AccountStatus::Active);
    assert_eq!(active.last_event_seq, frozen.last_event_seq + 1);
    ok("pay after unfreezing", h.pay(&a, b.id, 1_000).await);
    assert_eq!(h.get_account(a.id).await.posted_minor, 9_000);

    // A pending transfer whose credit account is frozen cannot post; it can still be voided.
    let p = pending(&a, b.id, TransferKind::Internal, 500, h.now() + TimeDelta::hours(1));
    ok("hold", h.transfer(p.clone()).await);
    ok("freeze b", h.ledger.set_account_status(b.id, AccountStatus::Frozen).await);
    h.rejects(
        "post onto a frozen account",
        h.ledger.post_pending(p.id),
        LedgerError::AccountNotActive { account: b.id, status: AccountStatus::Frozen },
    )
    .await;
    let voided = ok("void while frozen", h.ledger.void_pending(p.id, VoidReason::Cancelled).await);
    assert_eq!(voided.transfer.state, crate::transfer::TransferState::Voided);
    ok("unfreeze b", h.ledger.set_account_status(b.id, AccountStatus::Active).await);

    // Closing needs a zero balance and no holds.
    let not_empty = LedgerError::AccountNotEmpty { account: a.id };
    h.rejects("close with a balance", h.ledger.set_account_status(a.id, AccountStatus::Closed), not_empty.clone())
        .await;
    ok("freeze before closing", h.ledger.set_account_status(a.id, AccountStatus::Frozen).await);
    h.rejects(
        "close a frozen account with a balance",
        h.ledger.set_account_status(a.id, AccountStatus::Closed),
        not_empty,
    )
    .await;
    ok("unfreeze", h.ledger.set_account_status(a.id, AccountStatus::Active).await);

    let c_owner = h.customer("carol").await;
    let c = h.account(c_owner.id, Currency::EUR, 1_000).await;
    let hold = pending(&c, clearing, TransferKind::Interbank, 600, h.now() + TimeDelta::hours(1));
    ok("hold on the overdraft", h.transfer(hold.clone()).await);
    let c_now = h.get_account(c.id).await;
    assert_eq!((c_now.posted_minor, c_now.held_minor), (0, 600));
    h.rejects(
        "close with a hold and no balance",
        h.ledger.set_account_status(c.id, AccountStatus::Closed),
        LedgerError::AccountNotEmpty { account: c.id },
    )
    .await;
    ok("void the hold", h.ledger.void_pending(hold.id, VoidReason::Cancelled).await);
    let closed_c = ok("close once empty", h.ledger.set_account_status(c.id, AccountStatus::Closed).await);
    assert_eq!(closed_c.status, AccountStatus::Closed);

    // Empty `a` and close it; a closed account stays closed.
    let rest = h.get_account(a.id).await.posted_minor;
    ok("empty the account", h.pay(&a, b.id, rest).await);
    let closed = ok("close", h.ledger.set_account_status(a.id, AccountStatus::Closed).await);
    assert_eq!(closed.status, AccountStatus::Closed);
    assert_eq!(
        h.events(a.id).await.pop().map(|e| e.body),
        Some(EventBody::AccountStatusChanged { status: AccountStatus::Closed })
    );
    let replay = h
        .unchanged("close again", h.execute(Command::SetAccountStatus { id: a.id, status: AccountStatus::Closed }))
        .await;
    assert!(replay.replayed);
    h.rejects("reopen", h.ledger.set_account_status(a.id, AccountStatus::Active), invalid("status")).await;
    h.rejects("freeze a closed account", h.ledger.set_account_status(a.id, AccountStatus::Frozen), invalid("status"))
        .await;
    let closed_err = LedgerError::AccountNotActive { account: a.id, status: AccountStatus::Closed };
    h.rejects("credit a closed account", h.pay(&b, a.id, 1), closed_err.clone()).await;
    let deposit = request(TransferKind::Deposit, SystemAccount::Funding.id(Currency::EUR), a.id, 1, Currency::EUR);
    h.rejects("fund a closed account", h.transfer(deposit), closed_err).await;
    assert_eq!(
        ok("accounts_of", h.store().accounts_of(closed.customer_id().expect("a customer account")).await),
        vec![closed.clone()],
        "closed accounts are still listed"
    );

    // System accounts and unknown accounts.
    let funding = SystemAccount::Funding.id(Currency::EUR);
    h.rejects(
        "freeze a system account",
        h.ledger.set_account_status(funding, AccountStatus::Frozen),
        invalid("status"),
    )
    .await;
    let unknown = AccountId::new_v7();
    h.track_account(unknown);
    h.rejects(
        "freeze an unknown account",
        h.ledger.set_account_status(unknown, AccountStatus::Frozen),
        LedgerError::AccountNotFound(unknown),
    )
    .await;
    h.check_invariants().await;
}
