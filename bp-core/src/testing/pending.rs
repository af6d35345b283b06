//! Cases for pending (two-phase) transfers: holds, posting, voiding, failing, expiry, and the
//! payer's list of them.

use std::collections::HashSet;

use chrono::TimeDelta;

use tokio::task::JoinSet;

use super::StoreFactory;
use super::concurrency::join_all;
use super::fixtures::{ok, request};
use super::harness::{Harness, invalid};
use crate::Timestamp;
use crate::account::{Account, AccountStatus, Balances, SystemAccount};
use crate::error::LedgerError;
use crate::event::EventBody;
use crate::ids::{AccountId, TransferId};
use crate::money::{Currency, Money};
use crate::store::Store;
use crate::store::{HistoryQuery, PAGE_LEN_MAX};
use crate::transfer::{Direction, Transfer, TransferKind, TransferRequest, TransferState, VoidReason};

const EUR: Currency = Currency::EUR;

fn hold(debit: &Account, credit: AccountId, kind: TransferKind, amount: i64, until: Timestamp) -> TransferRequest {
    TransferRequest { hold_until: Some(until), ..request(kind, debit.id, credit, amount, debit.currency) }
}

fn balances(posted: i64, held: i64) -> Balances {
    Balances { posted: Money::new(posted, EUR), held: Money::new(held, EUR), available: Money::new(posted - held, EUR) }
}

fn transition(transfer: TransferId, from: TransferState, to: TransferState) -> LedgerError {
    LedgerError::InvalidTransition { transfer, from, to }
}

/// Hold, post, replay, void, fail: balances, postings and events at each step, and every
/// transition that is not allowed.
pub async fn pending_lifecycle<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    let b = h.customer_account("bob", EUR).await;
    h.fund(&a, 100_00).await;
    let clearing = SystemAccount::InterbankClearing.id(EUR);

    // A hold: held up, available down, posted unchanged; one event, on the debit account only.
    h.advance_secs(60);
    let t0 = h.now();
    let until = t0 + TimeDelta::hours(1);
    let before = h.get_account(a.id).await;
    let p1 = hold(&a, clearing, TransferKind::Interbank, 30_00, until);
    let r = ok("hold", h.transfer(p1.clone()).await);
    assert!(!r.replayed);
    let t = r.transfer;
    assert_eq!(
        (t.id, t.state, t.hold_until, t.finished_at, t.void_reason),
        (p1.id, TransferState::Pending, Some(until), None, None)
    );
    assert_eq!((t.debit_account, t.credit_account, t.amount, t.created_at), (a.id, clearing, p1.amount, t0));
    let after = h.get_account(a.id).await;
    assert_eq!(after.balances(), balances(100_00, 30_00));
    assert_eq!(after.last_event_seq, before.last_event_seq + 1);
    let event = h.events(a.id).await.pop().expect("an event");
    assert_eq!(event.at, t0);
    assert_eq!(
        event.body,
        EventBody::TransferPending {
            transfer_id: p1.id,
            kind: TransferKind::Interbank,
            amount: p1.amount,
            counterparty: clearing,
            balances: balances(100_00, 30_00),
        }
    );
    assert!(h.events(clearing).await.is_empty(), "a hold writes no event on the credit account");
    assert!(h.history_all(clearing, &HistoryQuery::default()).await.is_empty(), "a hold writes no posting");
    assert_eq!(h.history_all(a.id, &HistoryQuery::default()).await.len(), 1, "a hold writes no posting");
    assert_eq!(h.get_transfer(p1.id).await, t);

    // The hold counts against later transfers.
    h.rejects("spend the held funds", h.pay(&a, b.id, 70_01), LedgerError::InsufficientFunds { account: a.id }).await;
    let h2 = hold(&a, clearing, TransferKind::Interbank, 70_01, until);
    h.rejects("hold the held funds", h.transfer(h2), LedgerError::InsufficientFunds { account: a.id }).await;
    ok("spend the rest", h.pay(&a, b.id, 40_00).await);

    // Post: the money moves, the hold is released, two postings.
    h.advance_secs(600);
    let t1 = h.now();
    let r = ok("post", h.ledger.post_pending(p1.id).await);
    assert!(!r.replayed);
    assert_eq!(
        (r.transfer.state, r.transfer.finished_at, r.transfer.created_at),
        (TransferState::Posted, Some(t1), t0)
    );
    assert_eq!(h.get_transfer(p1.id).await, r.transfer);
    assert_eq!(h.get_account(a.id).await.balances(), balances(30_00, 0));
    assert_eq!(h.get_account(clearing).await.posted_minor, 30_00);
    let line = h.history_all(a.id, &HistoryQuery::default()).await.remove(0);
    assert_eq!(
        (line.transfer_id, line.direction, line.amount, line.counterparty),
        (p1.id, Direction::Debit, p1.amount, clearing)
    );
    assert_eq!((line.kind, line.balance_after, line.posted_at), (TransferKind::Interbank, Money::new(30_00, EUR), t1));
    let line = h.history_all(clearing, &HistoryQuery::default()).await;
    assert_eq!(line.len(), 1);
    assert_eq!((line[0].transfer_id, line[0].direction), (p1.id, Direction::Credit));
    let event = h.events(a.id).await.pop().expect("an event");
    let EventBody::TransferPosted { transfer_id, direction, balances: after, .. } = event.body else {
        panic!("posting writes transfer.posted, not {event:?}");
    };
    assert_eq!((transfer_id, direction, after), (p1.id, Direction::Debit, balances(30_00, 0)));
    assert_eq!(h.events(clearing).await.len(), 1);

    let again = h.unchanged("post again", h.ledger.post_pending(p1.id)).await;
    assert_eq!((again.transfer, again.replayed), (r.transfer.clone(), true));
    for (reason, to) in [
        (VoidReason::Cancelled, TransferState::Voided),
        (VoidReason::Expired, TransferState::Voided),
        (VoidReason::Rejected, TransferState::Failed),
    ] {
        h.rejects(
            &format!("void a posted transfer ({reason:?})"),
            h.ledger.void_pending(p1.id, reason),
            transition(p1.id, TransferState::Posted, to),
        )
        .await;
    }

    // Void: the hold is released, nothing posted.
    let p2 = hold(&a, clearing, TransferKind::Interbank, 10_00, h.now() + TimeDelta::hours(1));
    ok("hold", h.transfer(p2.clone()).await);
    assert_eq!(h.get_account(a.id).await.balances(), balances(30_00, 10_00));
    h.advance_secs(5);
    let r = ok("void", h.ledger.void_pending(p2.id, VoidReason::Cancelled).await);
    assert!(!r.replayed);
    assert_eq!(
        (r.transfer.state, r.transfer.void_reason, r.transfer.finished_at),
        (TransferState::Voided, Some(VoidReason::Cancelled), Some(h.now()))
    );
    assert_eq!(h.get_account(a.id).await.balances(), balances(30_00, 0));
    let event = h.events(a.id).await.pop().expect("an event");
    assert_eq!(
        event.body,
        EventBody::TransferVoided {
            transfer_id: p2.id,
            reason: VoidReason::Cancelled,
            amount: p2.amount,
            balances: balances(30_00, 0)
        }
    );
    assert!(h.history_all(a.id, &HistoryQuery::default()).await.iter().all(|p| p.transfer_id != p2.id));
    let again = h.unchanged("void again", h.ledger.void_pending(p2.id, VoidReason::Cancelled)).await;
    assert_eq!((again.transfer, again.replayed), (r.transfer, true));
    h.rejects(
        "post a voided transfer",
        h.ledger.post_pending(p2.id),
        transition(p2.id, TransferState::Voided, TransferState::Posted),
    )
    .await;
    h.rejects(
        "fail a voided transfer",
        h.ledger.void_pending(p2.id, VoidReason::Rejected),
        transition(p2.id, TransferState::Voided, TransferState::Failed),
    )
    .await;
    h.rejects(
        "expire a cancelled transfer",
        h.ledger.void_pending(p2.id, VoidReason::Expired),
        transition(p2.id, TransferState::Voided, TransferState::Voided),
    )
    .await;

    // Rejected by the other side: the transfer fails.
    let p3 = hold(&a, clearing, TransferKind::Interbank, 5_00, h.now() + TimeDelta::hours(1));
    ok("hold", h.transfer(p3.clone()).await);
    let r = ok("reject", h.ledger.void_pending(p3.id, VoidReason::Rejected).await);
    assert_eq!((r.transfer.state, r.transfer.void_reason), (TransferState::Failed, Some(VoidReason::Rejected)));
    assert_eq!(h.get_account(a.id).await.balances(), balances(30_00, 0));
    let again = h.unchanged("reject again", h.ledger.void_pending(p3.id, VoidReason::Rejected)).await;
    assert!(again.replayed);
    h.rejects(
        "post a failed transfer",
        h.ledger.post_pending(p3.id),
        transition(p3.id, TransferState::Failed, TransferState::Posted),
    )
    .await;
    h.rejects(
        "cancel a failed transfer",
        h.ledger.void_pending(p3.id, VoidReason::Cancelled),
        transition(p3.id, TransferState::Failed, TransferState::Voided),
    )
    .await;

    // An internal pending transfer between two customers.
    let p4 = hold(&a, b.id, TransferKind::Internal, 7_00, h.now() + TimeDelta::hours(1));
    ok("internal hold", h.transfer(p4.clone()).await);
    assert_eq!(
        h.get_account(b.id).await.balances(),
        Balances { posted: Money::new(40_00, EUR), held: Money::zero(EUR), available: Money::new(40_00, EUR) }
    );
    ok("post internal", h.ledger.post_pending(p4.id).await);
    assert_eq!(h.get_account(a.id).await.balances(), balances(23_00, 0));
    assert_eq!(h.get_account(b.id).await.posted_minor, 47_00);
    h.check_invariants().await;
}

/// Expiry: posting after `hold_until` fails, voiding as expired before it fails, the sweeper
/// lists and voids what is due, and the boundary instant belongs to the hold.
pub async fn pending_expiry<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    h.fund(&a, 100_00).await;
    let clearing = SystemAccount::InterbankClearing.id(EUR);
    let t0 = h.now();
    let hour = |n| t0 + TimeDelta::hours(n);
    let sec = TimeDelta::seconds(1);
    let p1 = hold(&a, clearing, TransferKind::Interbank, 10_00, hour(1));
    let p2 = hold(&a, clearing, TransferKind::Interbank, 10_00, hour(2));
    let p3 = hold(&a, clearing, TransferKind::Interbank, 10_00, hour(3));
    let p4 = hold(&a, clearing, TransferKind::Interbank, 5_00, hour(1));
    for p in [&p1, &p2, &p3, &p4] {
        ok("hold", h.transfer(p.clone()).await);
    }
    assert_eq!(h.get_account(a.id).await.held_minor, 35_00);
    let due = |now: Timestamp, limit: u32| {
        let h = &h;
        async move {
            let ids = ok("pending_expired", h.store().pending_expired(now, limit).await);
            let set: HashSet<TransferId> = ids.iter().copied().collect();
            assert_eq!(set.len(), ids.len(), "pending_expired lists a transfer twice");
            assert!(ids.len() <= usize::try_from(limit).unwrap_or(usize::MAX), "pending_expired ignores its limit");
            set
        }
    };

    assert!(due(t0, 100).await.is_empty());
    assert!(due(hour(1), 100).await.is_empty(), "a hold ending exactly now is not yet due");
    h.rejects(
        "expire before the end",
        h.ledger.void_pending(p1.id, VoidReason::Expired),
        LedgerError::HoldNotExpired { transfer: p1.id },
    )
    .await;
    h.clock.set(hour(1));
    h.rejects(
        "expire at the end",
        h.ledger.void_pending(p1.id, VoidReason::Expired),
        LedgerError::HoldNotExpired { transfer: p1.id },
    )
    .await;
    let posted = ok("post at the last instant", h.ledger.post_pending(p4.id).await);
    assert_eq!(posted.transfer.state, TransferState::Posted);
    assert_eq!(due(hour(1) + sec, 100).await, HashSet::from([p1.id]), "due holds, not posted ones");

    h.clock.set(hour(1) + sec);
    h.rejects("post after the end", h.ledger.post_pending(p1.id), LedgerError::HoldExpired { transfer: p1.id }).await;
    assert_eq!(due(hour(2) + sec, 100).await, HashSet::from([p1.id, p2.id]));
    let one = due(hour(2) + sec, 1).await;
    assert!(one.len() == 1 && one.is_subset(&HashSet::from([p1.id, p2.id])), "limit 1 lists one due hold: {one:?}");
    assert_eq!(due(hour(10), PAGE_LEN_MAX).await, HashSet::from([p1.id, p2.id, p3.id]), "due as of the given time");

    // The sweeper voids what is due at the time it is given.
    h.clock.set(hour(2) + sec);
    let voided = ok("expire_holds", h.ledger.expire_holds(h.now(), 100).await);
    assert_eq!(voided, 2);
    for p in [&p1, &p2] {
        let t = h.get_transfer(p.id).await;
        assert_eq!(
            (t.state, t.void_reason, t.finished_at),
            (TransferState::Voided, Some(VoidReason::Expired), Some(h.now()))
        );
    }
    let reasons: Vec<VoidReason> = h
        .events(a.id)
        .await
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::TransferVoided { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![VoidReason::Expired, VoidReason::Expired]);
    assert_eq!(h.get_account(a.id).await.balances(), balances(95_00, 10_00));
    assert!(due(h.now(), 100).await.is_empty());
    assert_eq!(ok("nothing left to expire", h.ledger.expire_holds(h.now(), 100).await), 0);
    let again = h.unchanged("expire again", h.ledger.void_pending(p1.id, VoidReason::Expired)).await;
    assert!(again.replayed);
    h.rejects(
        "expire p3 early",
        h.ledger.void_pending(p3.id, VoidReason::Expired),
        LedgerError::HoldNotExpired { transfer: p3.id },
    )
    .await;
    h.clock.set(hour(3) + sec);
    let r = ok("expire p3 by hand", h.ledger.void_pending(p3.id, VoidReason::Expired).await);
    assert_eq!((r.transfer.state, r.transfer.void_reason), (TransferState::Voided, Some(VoidReason::Expired)));
    assert_eq!(h.get_account(a.id).await.balances(), balances(95_00, 0));

    // The sweeper's limit.
    let until = h.now() + TimeDelta::minutes(5);
    for _ in 0..3 {
        ok("hold", h.transfer(hold(&a, clearing, TransferKind::Interbank, 1_00, until)).await);
    }
    h.advance_secs(301);
    assert_eq!(ok("sweep 1", h.ledger.expire_holds(h.now(), 2).await), 2);
    assert_eq!(ok("sweep 2", h.ledger.expire_holds(h.now(), 2).await), 1);
    assert_eq!(ok("sweep 3", h.ledger.expire_holds(h.now(), 2).await), 0);
    assert_eq!(h.get_account(a.id).await.held_minor, 0);
    h.check_invariants().await;
}

/// The remaining errors of pending transfers: unknown ids, holds that cannot be placed, posting
/// from a frozen account, and post/void on a transfer that was never pending.
pub async fn pending_errors<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    let u = h.customer_account("uma", Currency::USD).await;
    h.fund(&a, 10_00).await;
    let clearing = SystemAccount::InterbankClearing.id(EUR);
    let until = h.now() + TimeDelta::hours(1);

    let unknown = TransferId::new_v7();
    h.track_transfers([unknown]);
    h.rejects("post an unknown transfer", h.ledger.post_pending(unknown), LedgerError::TransferNotFound(unknown)).await;
    for reason in [VoidReason::Cancelled, VoidReason::Expired, VoidReason::Rejected] {
        h.rejects(
            "void an unknown transfer",
            h.ledger.void_pending(unknown, reason),
            LedgerError::TransferNotFound(unknown),
        )
        .await;
    }
    expect_not_found(&h, unknown).await;

    h.rejects(
        "hold more than the balance",
        h.transfer(hold(&a, clearing, TransferKind::Interbank, 10_01, until)),
        LedgerError::InsufficientFunds { account: a.id },
    )
    .await;
    h.rejects(
        "hold in another currency",
        h.transfer(TransferRequest {
            amount: Money::new(1, EUR),
            ..hold(&u, SystemAccount::InterbankClearing.id(Currency::USD), TransferKind::Interbank, 1, until)
        }),
        LedgerError::CurrencyMismatch { account: u.id, expected: Currency::USD, actual: EUR },
    )
    .await;
    h.rejects(
        "hold that ended",
        h.transfer(hold(&a, clearing, TransferKind::Interbank, 1, h.now())),
        invalid("hold_until"),
    )
    .await;
    h.rejects(
        "hold of nothing",
        h.transfer(hold(&a, clearing, TransferKind::Interbank, 0, until)),
        LedgerError::NonPositiveAmount,
    )
    .await;

    // Posting needs the accounts active; voiding does not.
    let p = hold(&a, clearing, TransferKind::Interbank, 4_00, until);
    ok("hold", h.transfer(p.clone()).await);
    ok("freeze", h.ledger.set_account_status(a.id, AccountStatus::Frozen).await);
    h.rejects(
        "post from a frozen account",
        h.ledger.post_pending(p.id),
        LedgerError::AccountNotActive { account: a.id, status: AccountStatus::Frozen },
    )
    .await;
    ok("unfreeze", h.ledger.set_account_status(a.id, AccountStatus::Active).await);
    ok("post once active", h.ledger.post_pending(p.id).await);

    // An immediate transfer was never pending: posting replays it, voiding is a bad transition.
    let t = ok("immediate", h.pay(&a, h.customer_account("bob", EUR).await.id, 1_00).await).transfer;
    let again = h.unchanged("post an immediate transfer", h.ledger.post_pending(t.id)).await;
    assert_eq!((again.transfer, again.replayed), (t.clone(), true));
    h.rejects(
        "void an immediate transfer",
        h.ledger.void_pending(t.id, VoidReason::Cancelled),
        transition(t.id, TransferState::Posted, TransferState::Voided),
    )
    .await;
    h.check_invariants().await;
}

/// The pending transfers an account pays (`Store::pending_of`): listed for the payer only (not
/// for the payee, not for another payer), oldest first with ties in id order, at most `limit` and
/// at most [`PAGE_LEN_MAX`]; a transfer leaves the list when it is posted, cancelled, rejected or
/// expired.
pub async fn pending_list<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    let b = h.customer_account("bob", EUR).await;
    h.fund(&a, 100_00).await;
    h.fund(&b, 10_00).await;
    let clearing = SystemAccount::InterbankClearing.id(EUR);
    let list = |account: AccountId, limit: u32| {
        let h = &h;
        async move { ok("pending_of", h.store().pending_of(account, limit).await) }
    };
    let ids = |list: &[Transfer]| list.iter().map(|t| t.id).collect::<Vec<_>>();
    assert!(list(a.id, PAGE_LEN_MAX).await.is_empty(), "no holds yet");
    assert!(list(AccountId::new_v7(), PAGE_LEN_MAX).await.is_empty(), "an unknown account has none");

    // Four holds of Ada's: p1, a second later p2, and another second later p3 and p4 at the same
    // instant, p4 made second but with the smaller id.
    let until = h.now() + TimeDelta::hours(1);
    let p1 = hold(&a, b.id, TransferKind::Internal, 10_00, until);
    ok("hold p1", h.transfer(p1.clone()).await);
    h.advance_secs(1);
    let p2 = hold(&a, clearing, TransferKind::Interbank, 20_00, until);
    ok("hold p2", h.transfer(p2.clone()).await);
    h.advance_secs(1);
    let (low, high) = {
        let (x, y) = (TransferId::new_v7(), TransferId::new_v7());
        if x < y { (x, y) } else { (y, x) }
    };
    let p3 = TransferRequest { id: high, ..hold(&a, b.id, TransferKind::Internal, 3_00, until) };
    let p4 = TransferRequest { id: low, ..hold(&a, b.id, TransferKind::Internal, 4_00, until) };
    ok("hold p3", h.transfer(p3.clone()).await);
    ok("hold p4", h.transfer(p4.clone()).await);
    // Not Ada's to list: a posted payment of hers, and Bob's hold that pays her.
    ok("immediate payment", h.pay(&a, b.id, 1_00).await);
    let q = hold(&b, a.id, TransferKind::Internal, 5_00, until);
    ok("hold q", h.transfer(q.clone()).await);

    let all = list(a.id, PAGE_LEN_MAX).await;
    assert_eq!(ids(&all), [p1.id, p2.id, p4.id, p3.id], "oldest first, ties by id");
    for t in &all {
        assert_eq!(t, &h.get_transfer(t.id).await, "a listed transfer is the transfer as read by id");
        assert_eq!((t.state, t.debit_account), (TransferState::Pending, a.id));
    }
    assert_eq!(ids(&list(b.id, PAGE_LEN_MAX).await), [q.id], "the payee of p1, p3 and p4 does not list them");
    assert!(list(clearing, PAGE_LEN_MAX).await.is_empty(), "the payee of p2 does not list it");
    for limit in 0..=5u32 {
        let n = usize::try_from(limit).unwrap_or(usize::MAX).min(all.len());
        assert_eq!(list(a.id, limit).await, all[..n], "limit {limit}: the oldest {n}");
    }
    assert_eq!(list(a.id, u32::MAX).await, all, "a limit above the cap");

    // Posted, cancelled, rejected: gone from the list, the rest in order.
    ok("post p2", h.ledger.post_pending(p2.id).await);
    assert_eq!(ids(&list(a.id, PAGE_LEN_MAX).await), [p1.id, p4.id, p3.id], "posted");
    ok("cancel p4", h.ledger.void_pending(p4.id, VoidReason::Cancelled).await);
    assert_eq!(ids(&list(a.id, PAGE_LEN_MAX).await), [p1.id, p3.id], "cancelled");
    ok("reject p3", h.ledger.void_pending(p3.id, VoidReason::Rejected).await);
    assert_eq!(ids(&list(a.id, PAGE_LEN_MAX).await), [p1.id], "rejected");
    // Expired: after the hold's end, still listed until the sweeper voids it.
    h.clock.set(until + TimeDelta::seconds(1));
    assert_eq!(ids(&list(a.id, PAGE_LEN_MAX).await), [p1.id], "an expired hold is pending until voided");
    assert_eq!(ok("expire", h.ledger.expire_holds(h.now(), 100).await), 2);
    assert!(list(a.id, PAGE_LEN_MAX).await.is_empty(), "expired");
    assert!(list(b.id, PAGE_LEN_MAX).await.is_empty(), "expired");

    // The cap: 501 holds, made concurrently (so that some share a batch and its instant), list
    // the oldest 500 whatever the limit asked.
    let until = h.now() + TimeDelta::hours(1);
    let count = usize::try_from(PAGE_LEN_MAX).unwrap_or(usize::MAX) + 1;
    let requests: Vec<TransferRequest> =
        (0..count).map(|_| hold(&a, clearing, TransferKind::Interbank, 1, until)).collect();
    h.track_transfers(requests.iter().map(|r| r.id));
    let mut set = JoinSet::new();
    for chunk in requests.chunks(count.div_ceil(8)) {
        let ledger = h.ledger.clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            let mut made = Vec::new();
            for req in chunk {
                made.push(ok("hold a cent", ledger.transfer(req).await).transfer);
            }
            made
        });
    }
    let mut made: Vec<Transfer> = join_all(set).await.into_iter().flatten().collect();
    made.sort_by_key(|t| (t.created_at, t.id));
    made.truncate(count - 1);
    for limit in [PAGE_LEN_MAX, PAGE_LEN_MAX + 1, u32::MAX] {
        assert_eq!(list(a.id, limit).await, made, "limit {limit}: the oldest {PAGE_LEN_MAX}");
    }
    h.check_invariants().await;
}

async fn expect_not_found<S: crate::store::Store + ?Sized>(h: &Harness<S>, id: TransferId) {
    assert_eq!(ok("read", h.store().transfer(id).await), None);
    super::harness::expect_rule("façade read", h.ledger.transfer_by_id(id).await, &LedgerError::TransferNotFound(id));
}
