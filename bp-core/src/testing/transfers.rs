//! Cases for immediate transfers: funding, internal transfers, every rejection, the rules of
//! kinds, overdraft limits, balance overflow and idempotency.

use chrono::TimeDelta;

use super::StoreFactory;
use super::fixtures::{ok, request};
use super::harness::{Harness, invalid, kind_not_allowed};
use crate::account::{AccountKind, AccountOwner, AccountStatus, Balances, SystemAccount};
use crate::error::LedgerError;
use crate::event::{EVENT_VERSION, Event, EventBody};
use crate::ids::{AccountId, TransferId};
use crate::money::{Currency, Money, MoneyError};
use crate::store::Store;
use crate::store::{CurrencyTotal, HistoryQuery, Page};
use crate::transfer::{Direction, Posting, Transfer, TransferKind, TransferRequest, TransferState};

const EUR: Currency = Currency::EUR;

fn balances(posted: i64, held: i64, currency: Currency) -> Balances {
    Balances {
        posted: Money::new(posted, currency),
        held: Money::new(held, currency),
        available: Money::new(posted - held, currency),
    }
}

fn sorted(mut totals: Vec<CurrencyTotal>) -> Vec<CurrencyTotal> {
    totals.sort_by_key(|t| t.currency);
    totals
}

/// Funding from the (lazily opened) system account and an internal transfer: balances, the
/// transfer record, the two postings, the events and the totals; then every other kind.
pub async fn funding_and_internal_transfer<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    let b = h.customer_account("bob", EUR).await;
    let funding = SystemAccount::Funding.id(EUR);
    assert_eq!(SystemAccount::from_id(funding), Some((SystemAccount::Funding, EUR)));
    assert_eq!(
        ok("system account before use", h.store().account(funding).await),
        None,
        "system accounts appear lazily"
    );
    assert_eq!(
        ok("totals", h.store().totals().await),
        vec![CurrencyTotal { currency: EUR, posted_minor: 0, accounts: 3 }]
    );

    // Funding.
    h.advance_secs(5);
    let t1_at = h.now();
    let fund_req = request(TransferKind::Deposit, funding, a.id, 100_00, EUR);
    let receipt = ok("fund", h.transfer(fund_req.clone()).await);
    assert!(!receipt.replayed);
    let t1 = receipt.transfer;
    let expected = Transfer {
        id: fund_req.id,
        kind: TransferKind::Deposit,
        debit_account: funding,
        credit_account: a.id,
        amount: Money::new(100_00, EUR),
        reference: None,
        state: TransferState::Posted,
        hold_until: None,
        void_reason: None,
        created_at: t1_at,
        finished_at: Some(t1_at),
    };
    assert_eq!(t1, expected, "the funding transfer");
    assert_eq!(h.get_transfer(t1.id).await, t1);
    assert_eq!(ok("façade", h.ledger.transfer_by_id(t1.id).await), t1);
    let sys = h.get_account(funding).await;
    assert_eq!(sys.owner, AccountOwner::Bank { system: SystemAccount::Funding });
    assert!(sys.is_system());
    assert_eq!((sys.kind, sys.currency, sys.status), (AccountKind::System, EUR, AccountStatus::Active));
    assert_eq!(sys.number, SystemAccount::Funding.number(EUR));
    assert_eq!((sys.posted_minor, sys.held_minor, sys.overdraft_limit_minor), (-100_00, 0, 0));
    assert_eq!(sys.last_event_seq, 1);
    assert_eq!(sys.customer_id(), None);
    assert_eq!(h.get_account(a.id).await.balances(), balances(100_00, 0, EUR));

    // Internal transfer with a reference.
    h.advance_secs(5);
    let t2_at = h.now();
    let id = TransferId::new_v7();
    h.track_transfers([id]);
    let receipt = ok(
        "internal transfer",
        h.ledger.internal_transfer(id, a.id, b.id, Money::new(30_00, EUR), Some("Rent – März".to_owned())).await,
    );
    assert!(!receipt.replayed);
    let t2 = receipt.transfer;
    assert_eq!((t2.id, t2.kind, t2.state), (id, TransferKind::Internal, TransferState::Posted));
    assert_eq!((t2.debit_account, t2.credit_account, t2.amount), (a.id, b.id, Money::new(30_00, EUR)));
    assert_eq!(t2.reference.as_deref(), Some("Rent – März"));
    assert_eq!((t2.created_at, t2.finished_at), (t2_at, Some(t2_at)));
    let a_now = h.get_account(a.id).await;
    let b_now = h.get_account(b.id).await;
    assert_eq!(a_now.balances(), balances(70_00, 0, EUR));
    assert_eq!(b_now.balances(), balances(30_00, 0, EUR));
    assert_eq!((a_now.last_event_seq, b_now.last_event_seq), (3, 2));
    assert_eq!(h.get_account(funding).await.posted_minor, -100_00, "an internal transfer does not touch funding");

    // Postings: newest first, with the balance after each line.
    let line = |seq, account, t: &Transfer, direction, after, counterparty, at| Posting {
        seq,
        account_id: account,
        transfer_id: t.id,
        kind: t.kind,
        direction,
        amount: t.amount,
        balance_after: Money::new(after, EUR),
        counterparty,
        reference: t.reference.clone(),
        posted_at: at,
    };
    let q = HistoryQuery::default();
    assert_eq!(
        ok("history a", h.ledger.history(a.id, &q).await),
        Page {
            items: vec![
                line(3, a.id, &t2, Direction::Debit, 70_00, b.id, t2_at),
                line(2, a.id, &t1, Direction::Credit, 100_00, funding, t1_at),
            ],
            next_cursor: None
        }
    );
    assert_eq!(
        ok("history b", h.ledger.history(b.id, &q).await).items,
        vec![line(2, b.id, &t2, Direction::Credit, 30_00, a.id, t2_at)]
    );
    assert_eq!(
        ok("history funding", h.ledger.history(funding, &q).await).items,
        vec![line(1, funding, &t1, Direction::Debit, -100_00, a.id, t1_at)]
    );

    // Events: one transfer.posted per account, numbered on.
    let posted = |account: AccountId, seq, t: &Transfer, direction, counterparty, b: Balances, at| Event {
        account_id: account,
        seq,
        version: EVENT_VERSION,
        at,
        body: EventBody::TransferPosted {
            transfer_id: t.id,
            kind: t.kind,
            direction,
            amount: t.amount,
            counterparty,
            balances: b,
        },
    };
    let a_events = h.events(a.id).await;
    assert_eq!(
        a_events[1..],
        [
            posted(a.id, 2, &t1, Direction::Credit, funding, balances(100_00, 0, EUR), t1_at),
            posted(a.id, 3, &t2, Direction::Debit, b.id, balances(70_00, 0, EUR), t2_at),
        ]
    );
    assert_eq!(
        h.events(b.id).await[1..],
        [posted(b.id, 2, &t2, Direction::Credit, a.id, balances(30_00, 0, EUR), t2_at)]
    );
    assert_eq!(
        h.events(funding).await,
        [posted(funding, 1, &t1, Direction::Debit, a.id, balances(-100_00, 0, EUR), t1_at)]
    );
    assert_eq!(
        ok("totals", h.store().totals().await),
        vec![CurrencyTotal { currency: EUR, posted_minor: 0, accounts: 4 }]
    );

    // A second currency gets its own funding account; the totals stay apart.
    let u = h.account(a.customer_id().expect("owned"), Currency::USD, 0).await;
    h.fund(&u, 5_00).await;
    assert_eq!(h.get_account(SystemAccount::Funding.id(Currency::USD)).await.posted_minor, -5_00);
    assert_eq!(
        sorted(ok("totals", h.store().totals().await)),
        vec![
            CurrencyTotal { currency: EUR, posted_minor: 0, accounts: 4 },
            CurrencyTotal { currency: Currency::USD, posted_minor: 0, accounts: 2 },
        ]
    );

    // Every other kind, each through its own system account, opened on first use.
    let sys = |s: SystemAccount| s.id(EUR);
    let moves = [
        (TransferKind::Withdrawal, a.id, sys(SystemAccount::Funding), 10_00),
        (TransferKind::Fee, a.id, sys(SystemAccount::Fees), 1_00),
        (TransferKind::Interbank, a.id, sys(SystemAccount::InterbankClearing), 5_00),
        (TransferKind::Interbank, sys(SystemAccount::InterbankClearing), b.id, 2_00),
        (TransferKind::International, a.id, sys(SystemAccount::InternationalClearing), 3_00),
        (TransferKind::Loan, sys(SystemAccount::LoanFunding), b.id, 50_00),
        (TransferKind::Loan, b.id, sys(SystemAccount::LoanFunding), 10_00),
        (TransferKind::Fx, a.id, sys(SystemAccount::FxPosition), 4_00),
        (TransferKind::Fx, sys(SystemAccount::FxPosition), b.id, 1_00),
        (TransferKind::Interest, b.id, sys(SystemAccount::InterestIncome), 2_00),
    ];
    for (kind, debit, credit, amount) in moves {
        h.advance_secs(1);
        let t = ok(&format!("{kind:?} transfer"), h.transfer(request(kind, debit, credit, amount, EUR)).await).transfer;
        assert_eq!((t.kind, t.state), (kind, TransferState::Posted));
    }
    let expect = [
        (a.id, 47_00),
        (b.id, 71_00),
        (sys(SystemAccount::Funding), -90_00),
        (sys(SystemAccount::Fees), 1_00),
        (sys(SystemAccount::InterbankClearing), 3_00),
        (sys(SystemAccount::InternationalClearing), 3_00),
        (sys(SystemAccount::LoanFunding), -40_00),
        (sys(SystemAccount::FxPosition), 3_00),
        (sys(SystemAccount::InterestIncome), 2_00),
    ];
    for (id, posted) in expect {
        assert_eq!(h.get_account(id).await.posted_minor, posted, "balance of {id}");
    }
    for s in SystemAccount::ALL {
        let acc = h.get_account(s.id(EUR)).await;
        assert_eq!((acc.owner, acc.number), (AccountOwner::Bank { system: s }, s.number(EUR)));
    }
    assert_eq!(
        sorted(ok("totals", h.store().totals().await)),
        vec![
            CurrencyTotal { currency: EUR, posted_minor: 0, accounts: 9 },
            CurrencyTotal { currency: Currency::USD, posted_minor: 0, accounts: 2 },
        ]
    );
    h.check_invariants().await;
}

/// Each bad transfer request fails with its own error and changes nothing (no system account is
/// opened by a rejected transfer either); amounts that cannot be money fail in `Money::parse`.
pub async fn transfer_rejections<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    let b = h.customer_account("bob", EUR).await;
    let u = h.customer_account("uma", Currency::USD).await;
    let z = h.customer_account("zoe", EUR).await;
    h.fund(&a, 100_00).await;
    h.fund(&u, 50_00).await;
    h.fund(&z, 10_00).await;
    ok("freeze z", h.ledger.set_account_status(z.id, AccountStatus::Frozen).await);
    let usd = Currency::USD;
    let ghost = AccountId::new_v7();
    let ghost2 = AccountId::new_v7();
    let internal = |debit, credit, amount, currency| request(TransferKind::Internal, debit, credit, amount, currency);
    let with_ref = |r: &str| TransferRequest { reference: Some(r.to_owned()), ..internal(a.id, b.id, 1, EUR) };
    let pending_at = |t| TransferRequest { hold_until: Some(t), ..internal(a.id, b.id, 1, EUR) };
    let mismatch = |account, expected, actual| LedgerError::CurrencyMismatch { account, expected, actual };

    let cases: Vec<(&str, TransferRequest, LedgerError)> = vec![
        ("unknown debit account", internal(ghost, b.id, 1, EUR), LedgerError::AccountNotFound(ghost)),
        ("unknown credit account", internal(a.id, ghost, 1, EUR), LedgerError::AccountNotFound(ghost)),
        ("both unknown", internal(ghost, ghost2, 1, EUR), LedgerError::AccountNotFound(ghost)),
        ("EUR into a USD account", internal(a.id, u.id, 1, EUR), mismatch(u.id, usd, EUR)),
        ("EUR out of a USD account", internal(u.id, b.id, 1, EUR), mismatch(u.id, usd, EUR)),
        ("USD between EUR accounts", internal(a.id, b.id, 1, usd), mismatch(a.id, EUR, usd)),
        (
            "EUR deposit into a USD account",
            request(TransferKind::Deposit, SystemAccount::Funding.id(EUR), u.id, 1, EUR),
            mismatch(u.id, usd, EUR),
        ),
        (
            "USD deposit from the EUR funding account",
            request(TransferKind::Deposit, SystemAccount::Funding.id(EUR), u.id, 1, usd),
            mismatch(SystemAccount::Funding.id(EUR), EUR, usd),
        ),
        ("zero amount", internal(a.id, b.id, 0, EUR), LedgerError::NonPositiveAmount),
        ("negative amount", internal(a.id, b.id, -1, EUR), LedgerError::NonPositiveAmount),
        ("most negative amount", internal(a.id, b.id, i64::MIN, EUR), LedgerError::NonPositiveAmount),
        ("same account", internal(a.id, a.id, 1, EUR), LedgerError::SameAccount),
        ("more than the balance", internal(a.id, b.id, 100_01, EUR), LedgerError::InsufficientFunds { account: a.id }),
        ("from an empty account", internal(b.id, a.id, 1, EUR), LedgerError::InsufficientFunds { account: b.id }),
        ("the largest amount", internal(a.id, b.id, i64::MAX, EUR), LedgerError::InsufficientFunds { account: a.id }),
        ("reference of 141 characters", with_ref(&"x".repeat(141)), invalid("reference")),
        ("reference with a newline", with_ref("rent\nmarch"), invalid("reference")),
        ("reference with NUL", with_ref("rent\u{0}"), invalid("reference")),
        ("reference with DEL", with_ref("rent\u{7f}"), invalid("reference")),
        ("reference with NEL", with_ref("rent\u{85}"), invalid("reference")),
        ("hold until now", pending_at(h.now()), invalid("hold_until")),
        ("hold until the past", pending_at(h.now() - TimeDelta::seconds(1)), invalid("hold_until")),
        (
            "debit a frozen account",
            internal(z.id, b.id, 1, EUR),
            LedgerError::AccountNotActive { account: z.id, status: AccountStatus::Frozen },
        ),
        (
            "credit a frozen account",
            internal(a.id, z.id, 1, EUR),
            LedgerError::AccountNotActive { account: z.id, status: AccountStatus::Frozen },
        ),
    ];
    for (what, req, expected) in cases {
        h.rejects(what, h.transfer(req.clone()), expected).await;
        assert_eq!(ok("read", h.store().transfer(req.id).await), None, "{what}: a rejected transfer is not stored");
    }
    // (The interbank clearing account is open from the start, as a rail's clearing account.)
    for s in SystemAccount::ALL
        .into_iter()
        .filter(|s| !matches!(s, SystemAccount::Funding | SystemAccount::InterbankClearing))
    {
        assert_eq!(ok("read", h.store().account(s.id(EUR)).await), None, "a rejection opened {s:?}");
    }

    // The limits themselves pass: a 140-character reference (of two-byte characters), exactly
    // the whole balance.
    let reference = "é".repeat(140);
    let t = ok("reference of 140 characters", h.transfer(with_ref(&reference)).await).transfer;
    assert_eq!(t.reference.as_deref(), Some(reference.as_str()));
    let line = ok("history", h.ledger.history(b.id, &HistoryQuery::default()).await).items;
    assert_eq!(line[0].reference.as_deref(), Some(reference.as_str()), "the reference survives storage");
    ok("the whole balance", h.pay(&a, b.id, 100_00 - 1).await);
    assert_eq!(h.get_account(a.id).await.posted_minor, 0);

    // Amounts that are not money never reach the ledger: `Money::parse` rejects them.
    let parse = [
        ("1.005", EUR, MoneyError::TooManyDecimals { exponent: 2, currency: Some(EUR) }),
        ("1.5", Currency::JPY, MoneyError::TooManyDecimals { exponent: 0, currency: Some(Currency::JPY) }),
        ("0.0001", Currency::KWD, MoneyError::TooManyDecimals { exponent: 3, currency: Some(Currency::KWD) }),
        ("92233720368547758.08", EUR, MoneyError::Overflow),
        ("-92233720368547758.09", EUR, MoneyError::Overflow),
        ("9223372036854775808", Currency::JPY, MoneyError::Overflow),
    ];
    for (text, currency, expected) in parse {
        assert_eq!(Money::parse(text, currency), Err(expected), "Money::parse({text:?}, {currency})");
    }
    assert!(matches!(Money::parse("12,50", EUR), Err(MoneyError::InvalidAmount { .. })));
    assert_eq!(Money::parse("92233720368547758.07", EUR), Ok(Money::new(i64::MAX, EUR)));
    assert_eq!(Money::parse("0.01", EUR), Ok(Money::new(1, EUR)));
    h.check_invariants().await;
}

/// A transfer kind fixes which accounts it may join: internal transfers join two customer
/// accounts, every other kind a customer account and its own system account, on its side.
pub async fn kind_rules<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    let b = h.customer_account("bob", EUR).await;
    h.fund(&a, 100_00).await;
    let sys = |s: SystemAccount| s.id(EUR);
    let (funding, fees, interbank, international, loan) = (
        sys(SystemAccount::Funding),
        sys(SystemAccount::Fees),
        sys(SystemAccount::InterbankClearing),
        sys(SystemAccount::InternationalClearing),
        sys(SystemAccount::LoanFunding),
    );
    use TransferKind::{Deposit, Fee, Interbank, Internal, International, Loan, Withdrawal};
    let cases = [
        ("internal to a system account", Internal, a.id, funding),
        ("internal from a system account", Internal, funding, a.id),
        ("internal to the fees account", Internal, a.id, fees),
        ("deposit from the fees account", Deposit, fees, a.id),
        ("deposit between customers", Deposit, a.id, b.id),
        ("deposit the wrong way round", Deposit, a.id, funding),
        ("deposit between system accounts", Deposit, funding, fees),
        ("withdrawal from funding", Withdrawal, funding, a.id),
        ("withdrawal to the fees account", Withdrawal, a.id, fees),
        ("fee paid by the bank", Fee, fees, a.id),
        ("fee to funding", Fee, a.id, funding),
        ("interbank through funding", Interbank, a.id, funding),
        ("interbank between customers", Interbank, a.id, b.id),
        ("interbank through the international account", Interbank, a.id, international),
        ("international through the interbank account", International, interbank, a.id),
        ("loan through the fees account", Loan, a.id, fees),
        ("loan between system accounts", Loan, loan, funding),
    ];
    for (what, kind, debit, credit) in cases {
        h.rejects(what, h.transfer(request(kind, debit, credit, 1, EUR)), kind_not_allowed(kind)).await;
    }
    let pending = TransferRequest {
        hold_until: Some(h.now() + TimeDelta::hours(1)),
        ..request(Internal, a.id, interbank, 1, EUR)
    };
    h.rejects("pending internal to a system account", h.transfer(pending), kind_not_allowed(Internal)).await;
    // (The interbank clearing account is open from the start, as a rail's clearing account.)
    for id in [fees, international, loan] {
        assert_eq!(ok("read", h.store().account(id).await), None, "a rejected transfer opened a system account");
    }
    h.check_invariants().await;
}

/// The overdraft limit is honoured to the minor unit, holds included; credits always pass.
pub async fn overdraft_boundary<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let owner = h.customer("ada").await;
    let plain = h.account(owner.id, EUR, 0).await;
    let over = h.account(owner.id, EUR, 1_000).await;
    let held = h.account(owner.id, EUR, 1_000).await;
    let sink = h.account(owner.id, EUR, 0).await;
    h.fund(&plain, 100).await;
    h.fund(&over, 500).await;

    // Without an overdraft: exactly the balance, then not one unit more.
    ok("exactly the balance", h.pay(&plain, sink.id, 100).await);
    h.rejects("one unit below zero", h.pay(&plain, sink.id, 1), LedgerError::InsufficientFunds { account: plain.id })
        .await;
    let withdrawal = request(TransferKind::Withdrawal, plain.id, SystemAccount::Funding.id(EUR), 1, EUR);
    h.rejects("withdrawal below zero", h.transfer(withdrawal), LedgerError::InsufficientFunds { account: plain.id })
        .await;

    // With an overdraft of 1,000: down to −1,000 exactly.
    h.rejects(
        "one unit past the limit",
        h.pay(&over, sink.id, 1_501),
        LedgerError::InsufficientFunds { account: over.id },
    )
    .await;
    let t = ok("down to the limit", h.pay(&over, sink.id, 1_500).await).transfer;
    let now = h.get_account(over.id).await;
    assert_eq!(now.balances(), balances(-1_000, 0, EUR));
    let last = h.events(over.id).await.pop().expect("an event");
    let EventBody::TransferPosted { transfer_id, balances: shown, .. } = last.body else {
        panic!("a transfer writes transfer.posted, not {last:?}");
    };
    assert_eq!((transfer_id, shown), (t.id, balances(-1_000, 0, EUR)), "the overdrawn balance");
    h.rejects("past the limit", h.pay(&over, sink.id, 1), LedgerError::InsufficientFunds { account: over.id }).await;
    ok("credit an overdrawn account", h.pay(&sink, over.id, 1).await);
    ok("and spend it again", h.pay(&over, sink.id, 1).await);
    h.rejects("past the limit again", h.pay(&over, sink.id, 1), LedgerError::InsufficientFunds { account: over.id })
        .await;

    // Holds count against the limit too.
    let hold = TransferRequest {
        hold_until: Some(h.now() + TimeDelta::hours(1)),
        ..request(TransferKind::Interbank, held.id, SystemAccount::InterbankClearing.id(EUR), 400, EUR)
    };
    ok("hold on the overdraft", h.transfer(hold).await);
    h.rejects(
        "past the limit with a hold",
        h.pay(&held, sink.id, 601),
        LedgerError::InsufficientFunds { account: held.id },
    )
    .await;
    ok("down to the limit with a hold", h.pay(&held, sink.id, 600).await);
    assert_eq!(h.get_account(held.id).await.balances(), balances(-600, 400, EUR));
    h.check_invariants().await;
}

/// A credit past `i64::MAX` or a debit past `i64::MIN` fails with `BalanceOverflow` and changes
/// nothing; the totals are summed without overflowing.
pub async fn balance_overflow<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let owner = h.customer("ada").await;
    let x = h.account(owner.id, EUR, 0).await;
    let b = h.account(owner.id, EUR, 0).await;
    let y = h.account(owner.id, EUR, 10).await;
    let funding = SystemAccount::Funding.id(EUR);

    h.fund(&x, i64::MAX).await;
    assert_eq!(h.get_account(x.id).await.posted_minor, i64::MAX);
    assert_eq!(h.get_account(funding).await.posted_minor, -i64::MAX);
    let deposit = |to: AccountId, amount| request(TransferKind::Deposit, funding, to, amount, EUR);
    h.rejects("credit past i64::MAX", h.transfer(deposit(x.id, 1)), LedgerError::BalanceOverflow { account: x.id })
        .await;
    h.fund(&b, 1).await;
    assert_eq!(h.get_account(funding).await.posted_minor, i64::MIN);
    h.rejects("internal credit past i64::MAX", h.pay(&b, x.id, 1), LedgerError::BalanceOverflow { account: x.id })
        .await;
    h.rejects("debit past i64::MIN", h.transfer(deposit(b.id, 1)), LedgerError::BalanceOverflow { account: funding })
        .await;
    assert_eq!(
        ok("totals", h.store().totals().await),
        vec![CurrencyTotal { currency: EUR, posted_minor: 0, accounts: 5 }],
        "the totals of balances at the bounds of i64"
    );

    // A pending transfer whose posting would overflow stays pending.
    let p = TransferRequest {
        hold_until: Some(h.now() + TimeDelta::hours(1)),
        ..request(TransferKind::Internal, y.id, x.id, 1, EUR)
    };
    ok("hold", h.transfer(p.clone()).await);
    h.rejects("post past i64::MAX", h.ledger.post_pending(p.id), LedgerError::BalanceOverflow { account: x.id }).await;
    assert_eq!(h.get_transfer(p.id).await.state, TransferState::Pending);
    ok("void", h.ledger.void_pending(p.id, crate::transfer::VoidReason::Cancelled).await);

    // Money still leaves the full account.
    ok("pay from i64::MAX", h.pay(&x, b.id, 10).await);
    assert_eq!(h.get_account(x.id).await.posted_minor, i64::MAX - 10);
    assert_eq!(h.get_account(b.id).await.posted_minor, 11);
    h.check_invariants().await;
}

/// The same id and request replay the original transfer and move money once; the same id with
/// any other request is a conflict; a rejected request leaves its id free.
pub async fn idempotency<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    let b = h.customer_account("bob", EUR).await;
    let c = h.customer_account("cyd", EUR).await;
    let fund = h.fund(&a, 100_00).await;

    let req = TransferRequest {
        reference: Some("dinner".to_owned()),
        ..request(TransferKind::Internal, a.id, b.id, 10_00, EUR)
    };
    let first = ok("transfer", h.transfer(req.clone()).await);
    assert!(!first.replayed);
    h.advance_secs(3_600);
    for i in 0..3 {
        let again = h.unchanged(&format!("replay {i}"), h.transfer(req.clone())).await;
        assert!(again.replayed, "a retry is answered as a replay");
        assert_eq!(again.transfer, first.transfer, "a retry returns the original transfer");
    }
    assert_eq!(h.get_account(a.id).await.posted_minor, 90_00, "money moved once");
    assert_eq!(h.get_account(b.id).await.posted_minor, 10_00, "money moved once");
    let fund_replay = h.unchanged("replay the funding", h.ledger.fund(fund.id, a.id, fund.amount)).await;
    assert!(fund_replay.replayed);
    assert_eq!(fund_replay.transfer, fund);

    let conflict = LedgerError::IdempotencyConflict { id: req.id.to_string() };
    let variants = [
        ("other amount", TransferRequest { amount: Money::new(10_01, EUR), ..req.clone() }),
        ("other currency", TransferRequest { amount: Money::new(10_00, Currency::USD), ..req.clone() }),
        ("other payee", TransferRequest { credit_account: c.id, ..req.clone() }),
        ("other payer", TransferRequest { debit_account: c.id, ..req.clone() }),
        ("other reference", TransferRequest { reference: Some("lunch".to_owned()), ..req.clone() }),
        ("no reference", TransferRequest { reference: None, ..req.clone() }),
        ("other kind", TransferRequest { kind: TransferKind::Interbank, ..req.clone() }),
        ("pending instead", TransferRequest { hold_until: Some(h.now() + TimeDelta::hours(1)), ..req.clone() }),
        ("invalid amount", TransferRequest { amount: Money::new(0, EUR), ..req.clone() }),
    ];
    for (what, variant) in variants {
        h.rejects(what, h.transfer(variant), conflict.clone()).await;
    }

    // Replays answer even when the request could not be accepted any more.
    ok("freeze the payer", h.ledger.set_account_status(a.id, AccountStatus::Frozen).await);
    let again = h.unchanged("replay after freezing", h.transfer(req.clone())).await;
    assert_eq!((again.transfer, again.replayed), (first.transfer.clone(), true));
    ok("unfreeze", h.ledger.set_account_status(a.id, AccountStatus::Active).await);

    // A rejected request is not remembered: its id can be used once the cause is gone.
    let big = request(TransferKind::Internal, a.id, c.id, 150_00, EUR);
    h.rejects("too big", h.transfer(big.clone()), LedgerError::InsufficientFunds { account: a.id }).await;
    h.fund(&a, 60_00).await;
    let accepted = ok("the same request once funded", h.transfer(big.clone()).await);
    assert!(!accepted.replayed, "the first accepted attempt is not a replay");
    assert_eq!(h.get_account(c.id).await.posted_minor, 150_00);
    let again = h.unchanged("and now it replays", h.transfer(big)).await;
    assert_eq!((again.transfer, again.replayed), (accepted.transfer, true));

    // A pending transfer replays with its current state.
    let p = TransferRequest {
        hold_until: Some(h.now() + TimeDelta::hours(1)),
        ..request(TransferKind::Internal, c.id, b.id, 1_00, EUR)
    };
    ok("hold", h.transfer(p.clone()).await);
    let posted = ok("post", h.ledger.post_pending(p.id).await).transfer;
    let again = h.unchanged("replay the pending request", h.transfer(p)).await;
    assert_eq!((again.transfer.state, again.replayed), (TransferState::Posted, true));
    assert_eq!(again.transfer, posted);
    h.check_invariants().await;
}
