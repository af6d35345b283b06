//! Cases for events and the outbox: per-account numbering, `events_after`, and the outbox in
//! commit order.

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;

use chrono::TimeDelta;

use super::StoreFactory;
use super::books::read_outbox;
use super::fixtures::{ok, person, request};
use super::harness::{Harness, invalid};
use crate::account::{AccountStatus, SystemAccount};
use crate::customer::{CustomerUpdate, KycStatus};
use crate::error::{Error, LedgerError};
use crate::event::{EVENT_VERSION, Event};
use crate::ids::{AccountId, EventId};
use crate::money::Currency;
use crate::store::{PAGE_LEN_MAX, Store};
use crate::transfer::{TransferKind, TransferRequest, VoidReason};

const EUR: Currency = Currency::EUR;

/// Runs `op`, which must succeed, and checks that the outbox grew by exactly the events named by
/// `(account, type)`, after every earlier event, stamped with the clock's time.
async fn step<S: Store + ?Sized, T: Debug>(
    h: &Harness<S>,
    what: &str,
    expected: &[(AccountId, &str)],
    op: impl Future<Output = Result<T, Error>>,
) {
    h.advance_secs(7);
    let before = h.outbox().await;
    let after_pos = before.last().map_or(0, |e| e.position);
    ok(what, op.await);
    let new = ok("outbox", h.store().outbox_after(after_pos, PAGE_LEN_MAX).await);
    let all = h.outbox().await;
    assert_eq!(all[..before.len()], before[..], "{what}: earlier outbox entries changed");
    assert_eq!(all[before.len()..], new[..], "{what}: outbox_after({after_pos}) must return the new entries");
    let mut got: Vec<(AccountId, &str)> = new.iter().map(|e| (e.event.account_id, e.event.body.type_name())).collect();
    let mut want = expected.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{what}: the events it wrote");
    for e in &new {
        assert_eq!(e.event.at, h.now(), "{what}: events carry the time of their command");
        assert_eq!(e.event.version, EVENT_VERSION);
    }
}

/// `events_after` returns gap-free numbers after the one given with derived ids; the outbox
/// returns every event once, in commit order, however it is paged.
pub async fn events_and_outbox<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let ada = h.customer("ada").await;
    step(&h, "open a customer", &[], h.try_open_customer(person("eve"))).await;
    let update = CustomerUpdate { kyc: Some(KycStatus::Rejected), ..CustomerUpdate::default() };
    step(&h, "update a customer", &[], h.ledger.update_customer(ada.id, None, update)).await;
    let a = h.account(ada.id, EUR, 0).await;
    let b = h.customer_account("bob", EUR).await;
    let c = h.customer_account("cyd", EUR).await;
    let funding = SystemAccount::Funding.id(EUR);
    let clearing = SystemAccount::InterbankClearing.id(EUR);
    const OPENED: &str = "account.opened";
    const POSTED: &str = "transfer.posted";
    const PENDING: &str = "transfer.pending";
    const VOIDED: &str = "transfer.voided";
    const STATUS: &str = "account.status_changed";

    let new_account = crate::service::current_account(crate::ids::AccountId::new_v7(), ada.id, EUR);
    let d = new_account.id;
    step(&h, "open an account", &[(d, OPENED)], h.try_open_account(new_account)).await;
    let fund = request(TransferKind::Deposit, funding, a.id, 100_00, EUR);
    step(&h, "fund", &[(funding, POSTED), (a.id, POSTED)], h.transfer(fund.clone())).await;
    step(&h, "replay the funding", &[], h.transfer(fund)).await;
    step(&h, "pay", &[(a.id, POSTED), (b.id, POSTED)], h.pay(&a, b.id, 10_00)).await;
    let until = h.now() + TimeDelta::hours(1);
    let p1 = TransferRequest { hold_until: Some(until), ..request(TransferKind::Interbank, a.id, clearing, 5_00, EUR) };
    step(&h, "hold", &[(a.id, PENDING)], h.transfer(p1.clone())).await;
    step(&h, "void", &[(a.id, VOIDED)], h.ledger.void_pending(p1.id, VoidReason::Cancelled)).await;
    step(&h, "freeze", &[(b.id, STATUS)], h.ledger.set_account_status(b.id, AccountStatus::Frozen)).await;
    let before = h.outbox().await;
    h.rejects(
        "pay a frozen account",
        h.pay(&a, b.id, 1),
        LedgerError::AccountNotActive { account: b.id, status: AccountStatus::Frozen },
    )
    .await;
    assert_eq!(h.outbox().await, before, "a rejected command writes no event");
    step(&h, "unfreeze", &[(b.id, STATUS)], h.ledger.set_account_status(b.id, AccountStatus::Active)).await;
    step(&h, "pay on", &[(b.id, POSTED), (c.id, POSTED)], h.pay(&b, c.id, 3_00)).await;
    let p2 = TransferRequest { hold_until: Some(until), ..request(TransferKind::Internal, a.id, c.id, 2_00, EUR) };
    step(&h, "hold between customers", &[(a.id, PENDING)], h.transfer(p2.clone())).await;
    step(&h, "post", &[(a.id, POSTED), (c.id, POSTED)], h.ledger.post_pending(p2.id)).await;
    step(&h, "post again", &[], h.ledger.post_pending(p2.id)).await;
    let p3 = TransferRequest { hold_until: Some(until), ..request(TransferKind::Interbank, c.id, clearing, 1_00, EUR) };
    step(&h, "hold", &[(c.id, PENDING)], h.transfer(p3.clone())).await;
    step(&h, "reject", &[(c.id, VOIDED)], h.ledger.void_pending(p3.id, VoidReason::Rejected)).await;
    step(
        &h,
        "interbank out",
        &[(a.id, POSTED), (clearing, POSTED)],
        h.transfer(request(TransferKind::Interbank, a.id, clearing, 1_00, EUR)),
    )
    .await;

    // Each account's events: numbered 1.. without gaps, ids derived, in the order things happened.
    let types = |events: &[Event]| events.iter().map(|e| e.body.type_name()).collect::<Vec<_>>();
    let a_events = h.events(a.id).await;
    assert_eq!(types(&a_events), [OPENED, POSTED, POSTED, PENDING, VOIDED, PENDING, POSTED, POSTED]);
    assert_eq!(types(&h.events(b.id).await), [OPENED, POSTED, STATUS, STATUS, POSTED]);
    assert_eq!(types(&h.events(c.id).await), [OPENED, POSTED, POSTED, PENDING, VOIDED]);
    assert_eq!(types(&h.events(funding).await), [POSTED]);
    assert_eq!(types(&h.events(clearing).await), [POSTED]);
    let last = h.get_account(a.id).await.last_event_seq;
    assert_eq!(last, 8);
    for (i, e) in (1u64..).zip(&a_events) {
        assert_eq!((e.seq, e.id(), e.account_id), (i, EventId::derive(a.id, i), a.id));
    }
    for after in 0..=last {
        let got = ok("events_after", h.store().events_after(a.id, after, 2).await);
        let want: Vec<Event> = a_events.iter().filter(|e| e.seq > after).take(2).cloned().collect();
        assert_eq!(got, want, "events_after({after}, limit 2)");
    }
    assert!(ok("after the last", h.store().events_after(a.id, u64::MAX, 10).await).is_empty());
    assert!(ok("unknown account", h.store().events_after(AccountId::new_v7(), 0, 10).await).is_empty());
    assert_eq!(ok("façade", h.ledger.events_after(a.id, 0, PAGE_LEN_MAX).await), a_events);
    assert_eq!(ok("façade", h.ledger.events_after(a.id, 3, 1).await), a_events[3..4]);
    h.rejects("limit 0", h.ledger.events_after(a.id, 0, 0), invalid("limit")).await;
    h.rejects("limit 501", h.ledger.events_after(a.id, 0, PAGE_LEN_MAX + 1), invalid("limit")).await;
    let unknown = AccountId::new_v7();
    h.rejects("unknown account", h.ledger.events_after(unknown, 0, 10), LedgerError::AccountNotFound(unknown)).await;

    // The outbox: every event exactly once, however it is paged, in each account's order.
    let full = h.outbox().await;
    for page_len in [1, 2, 3, 500] {
        assert_eq!(read_outbox(h.store(), page_len).await, full, "outbox in pages of {page_len}");
    }
    let ids: HashSet<EventId> = full.iter().map(|e| e.event.id()).collect();
    assert_eq!(ids.len(), full.len(), "each event once");
    let accounts = [a.id, b.id, c.id, d, funding, clearing];
    let per_account: usize = {
        let mut n = 0;
        for id in accounts {
            let events = h.events(id).await;
            let in_outbox: Vec<Event> =
                full.iter().filter(|e| e.event.account_id == id).map(|e| e.event.clone()).collect();
            assert_eq!(in_outbox, events, "the outbox holds {id}'s events in order");
            n += events.len();
        }
        n
    };
    assert_eq!(per_account, full.len(), "the outbox holds nothing else");
    for k in 0..full.len() {
        let got = ok("outbox_after", h.store().outbox_after(full[k].position, 2).await);
        assert_eq!(got[..], full[k + 1..(k + 3).min(full.len())], "outbox_after the {k}th position");
    }
    let last_pos = full.last().map_or(0, |e| e.position);
    assert!(ok("after the end", h.store().outbox_after(last_pos, 10).await).is_empty());
    assert!(ok("far after the end", h.store().outbox_after(u64::MAX, 10).await).is_empty());
    h.check_invariants().await;
}

/// Consumer cursors: 0 until recorded, only forward, one per name, names checked.
pub async fn outbox_cursors<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let store = h.store();
    let ok = |what: &str, r: Result<u64, crate::StoreError>| r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(ok("a new cursor", store.cursor("relay").await), 0);
    store.set_cursor("relay", 7).await.expect("set 7");
    assert_eq!(ok("after 7", store.cursor("relay").await), 7);
    store.set_cursor("relay", 3).await.expect("set 3");
    assert_eq!(ok("an older position changes nothing", store.cursor("relay").await), 7);
    store.set_cursor("relay", 7).await.expect("set 7 again");
    store.set_cursor("relay", u64::from(u32::MAX) + 5).await.expect("set a large position");
    assert_eq!(ok("forward", store.cursor("relay").await), u64::from(u32::MAX) + 5);
    assert_eq!(ok("another consumer", store.cursor("relay-2").await), 0);
    for bad in ["", "Relay", "a b", &"x".repeat(65)] {
        let e = store.cursor(bad).await.expect_err("a bad name");
        assert_eq!(e.kind(), crate::StoreErrorKind::InvalidRequest, "{bad:?}");
        let e = store.set_cursor(bad, 1).await.expect_err("a bad name");
        assert_eq!(e.kind(), crate::StoreErrorKind::InvalidRequest, "{bad:?}");
    }
    h.check_invariants().await;
}
