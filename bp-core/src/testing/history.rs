//! Cases for the history of an account (FR2): newest first, cursor pagination, every filter,
//! invalid queries.

use chrono::TimeDelta;

use super::StoreFactory;
use super::fixtures::{ok, request};
use super::harness::{Harness, invalid};
use crate::Timestamp;
use crate::account::{Account, SystemAccount};
use crate::error::LedgerError;
use crate::ids::{AccountId, TransferId};
use crate::money::Currency;
use crate::store::{HistoryQuery, PAGE_LEN_DEFAULT, PAGE_LEN_MAX, Page, Store};
use crate::transfer::{Direction, Posting, TransferKind, TransferRequest};

const EUR: Currency = Currency::EUR;

/// Number of transfers the history cases make, one a minute.
const OPS: usize = 60;

/// A transfer the history cases made, as the model remembers it.
#[derive(Clone, Debug)]
struct Op {
    id: TransferId,
    kind: TransferKind,
    debit: AccountId,
    credit: AccountId,
    amount_minor: i64,
    at: Timestamp,
}

/// What the model expects of one history line.
type Line = (TransferId, Direction, i64, TransferKind, Timestamp, AccountId);

fn line_of(p: &Posting) -> Line {
    (p.transfer_id, p.direction, p.amount.amount_minor(), p.kind, p.posted_at, p.counterparty)
}

/// The model's history of `account`, newest first.
fn model_lines(ops: &[Op], account: AccountId) -> Vec<Line> {
    let mut lines = Vec::new();
    for op in ops.iter().rev() {
        if op.credit == account {
            lines.push((op.id, Direction::Credit, op.amount_minor, op.kind, op.at, op.debit));
        }
        if op.debit == account {
            lines.push((op.id, Direction::Debit, op.amount_minor, op.kind, op.at, op.credit));
        }
    }
    lines
}

/// The model's own reading of a query's filters (written apart from `HistoryQuery::matches`).
fn model_selects(q: &HistoryQuery, line: &Line) -> bool {
    let (_, direction, amount, kind, at, _) = *line;
    if q.from.is_some_and(|from| at < from) || q.to.is_some_and(|to| at >= to) {
        return false;
    }
    if q.direction.is_some_and(|d| d != direction) || q.kind.is_some_and(|k| k != kind) {
        return false;
    }
    !(q.amount_min_minor.is_some_and(|m| amount < m) || q.amount_max_minor.is_some_and(|m| amount > m))
}

/// Three accounts and [`OPS`] transfers of every kind between them, a minute apart.
struct World {
    a: Account,
    b: Account,
    c: Account,
    ops: Vec<Op>,
}

async fn world<S: Store + ?Sized>(h: &Harness<S>) -> World {
    let a = h.customer_account("ada", EUR).await;
    let b = h.customer_account("bob", EUR).await;
    let c = h.customer_account("cyd", EUR).await;
    let funding = SystemAccount::Funding.id(EUR);
    let fees = SystemAccount::Fees.id(EUR);
    let mut ops = Vec::with_capacity(OPS + 1);
    let mut plan = vec![(TransferKind::Deposit, funding, a.id, 1_000_00)];
    for i in 0..OPS {
        let n = i64::try_from(i).unwrap_or(0);
        plan.push(match i % 6 {
            0 => (TransferKind::Deposit, funding, a.id, 1_000 + n * 37),
            1 => (TransferKind::Internal, a.id, b.id, 500 + n * 11),
            2 => (TransferKind::Internal, b.id, a.id, 100 + n),
            3 => (TransferKind::Internal, a.id, c.id, 250 * (n % 3 + 1)),
            4 => (TransferKind::Withdrawal, a.id, funding, 300),
            _ => (TransferKind::Fee, a.id, fees, 50),
        });
    }
    for (kind, debit, credit, amount_minor) in plan {
        h.advance_secs(60);
        let req = TransferRequest {
            reference: (kind == TransferKind::Internal).then(|| format!("op {}", ops.len())),
            ..request(kind, debit, credit, amount_minor, EUR)
        };
        let t = ok("history transfer", h.transfer(req.clone()).await).transfer;
        ops.push(Op { id: t.id, kind, debit, credit, amount_minor, at: h.now() });
    }
    World { a, b, c, ops }
}

/// Every page of `account`'s history through the façade, following `next_cursor`; checks that
/// every page but the last is full and that only the last has no cursor.
async fn pages<S: Store + ?Sized>(h: &Harness<S>, account: AccountId, query: &HistoryQuery) -> Vec<Vec<Posting>> {
    let limit = usize::try_from(query.limit()).unwrap_or(usize::MAX);
    let mut q = query.clone();
    let mut pages = Vec::new();
    loop {
        let page: Page<Posting> = ok("history page", h.ledger.history(account, &q).await);
        assert!(page.items.len() <= limit, "a page is longer than its limit");
        let Some(cursor) = page.next_cursor else {
            pages.push(page.items);
            return pages;
        };
        assert_eq!(page.items.len(), limit, "a page with a cursor is full");
        let last_seq = page.items.last().map_or(0, |p| p.seq);
        assert!(cursor <= last_seq, "the cursor {cursor} skips lines after the page's last, {last_seq}");
        q.before_seq = Some(cursor);
        pages.push(page.items);
        assert!(pages.len() <= 10_000, "the cursor never ends");
    }
}

/// Newest first, and pages of every size cover each line exactly once.
pub async fn history_pagination<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let w = world(&h).await;

    let q500 = HistoryQuery { limit: Some(PAGE_LEN_MAX), ..HistoryQuery::default() };
    let full = ok("full history", h.ledger.history(w.a.id, &q500).await);
    assert_eq!(full.next_cursor, None, "everything fits in one page of 500");
    let full = full.items;
    assert_eq!(
        full.iter().map(line_of).collect::<Vec<_>>(),
        model_lines(&w.ops, w.a.id),
        "a's history is what happened, newest first"
    );
    assert!(full.windows(2).all(|p| p[0].seq > p[1].seq), "newest first, by seq");
    assert!(
        full.len() > usize::try_from(PAGE_LEN_DEFAULT).unwrap_or(usize::MAX),
        "the world is larger than a default page"
    );
    for acc in [&w.b, &w.c] {
        let lines = h.history_all(acc.id, &q500).await;
        assert_eq!(lines.iter().map(line_of).collect::<Vec<_>>(), model_lines(&w.ops, acc.id));
    }
    let funding = SystemAccount::Funding.id(EUR);
    let lines = h.history_all(funding, &q500).await;
    assert_eq!(lines.iter().map(line_of).collect::<Vec<_>>(), model_lines(&w.ops, funding));

    // The default page length.
    let first = ok("default page", h.ledger.history(w.a.id, &HistoryQuery::default()).await);
    assert_eq!(first.items[..], full[..usize::try_from(PAGE_LEN_DEFAULT).unwrap_or(0)], "the default page");
    assert!(first.next_cursor.is_some());

    // Every page size covers every line exactly once, in order.
    let len = full.len();
    for limit in [1, 2, 3, 7, 50, len - 1, len, len + 1, 500] {
        let q = HistoryQuery { limit: Some(u32::try_from(limit).unwrap_or(PAGE_LEN_MAX)), ..HistoryQuery::default() };
        let pages = pages(&h, w.a.id, &q).await;
        assert_eq!(pages.len(), len.div_ceil(limit).max(1), "limit {limit}: number of pages");
        let joined: Vec<Posting> = pages.into_iter().flatten().collect();
        assert_eq!(joined, full, "limit {limit}: the pages together are the whole history");
    }

    // Cursors taken from anywhere.
    let from_middle = HistoryQuery { before_seq: Some(full[10].seq), ..q500.clone() };
    assert_eq!(ok("from the middle", h.ledger.history(w.a.id, &from_middle).await).items, full[11..]);
    let before_first = HistoryQuery { before_seq: Some(1), ..q500.clone() };
    assert_eq!(
        ok("before the first", h.ledger.history(w.a.id, &before_first).await),
        Page { items: Vec::new(), next_cursor: None }
    );
    let past_last = HistoryQuery { before_seq: Some(u64::MAX), ..q500.clone() };
    assert_eq!(ok("past the last", h.ledger.history(w.a.id, &past_last).await).items, full);

    // An account without postings.
    let empty = h.account(w.a.customer_id().expect("owned"), EUR, 0).await;
    assert_eq!(
        ok("empty history", h.ledger.history(empty.id, &HistoryQuery::default()).await),
        Page { items: Vec::new(), next_cursor: None }
    );
    h.check_invariants().await;
}

/// Every filter, alone and combined, agrees with `HistoryQuery::matches` over the whole history
/// and with the model, through pagination.
pub async fn history_filters<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let w = world(&h).await;
    let full = h.history_all(w.a.id, &HistoryQuery::default()).await;
    let at = |i: usize| w.ops[i].at;
    let some_amount = full
        .iter()
        .find(|p| p.kind == TransferKind::Internal)
        .map(|p| p.amount.amount_minor())
        .expect("an internal line");

    let base = HistoryQuery::default();
    let queries: Vec<(&str, HistoryQuery, bool)> = vec![
        ("from", HistoryQuery { from: Some(at(20)), ..base.clone() }, true),
        ("to", HistoryQuery { to: Some(at(20)), ..base.clone() }, true),
        ("from and to", HistoryQuery { from: Some(at(10)), to: Some(at(30)), ..base.clone() }, true),
        (
            "one minute",
            HistoryQuery { from: Some(at(7)), to: Some(at(7) + TimeDelta::seconds(1)), ..base.clone() },
            true,
        ),
        (
            "between transfers",
            HistoryQuery { from: Some(at(7) + TimeDelta::seconds(1)), to: Some(at(8)), ..base.clone() },
            false,
        ),
        ("before everything", HistoryQuery { to: Some(at(0)), ..base.clone() }, false),
        ("after everything", HistoryQuery { from: Some(at(OPS) + TimeDelta::seconds(1)), ..base.clone() }, false),
        ("debits", HistoryQuery { direction: Some(Direction::Debit), ..base.clone() }, true),
        ("credits", HistoryQuery { direction: Some(Direction::Credit), ..base.clone() }, true),
        ("at least 1000", HistoryQuery { amount_min_minor: Some(1_000), ..base.clone() }, true),
        ("at most 600", HistoryQuery { amount_max_minor: Some(600), ..base.clone() }, true),
        (
            "exactly one amount",
            HistoryQuery { amount_min_minor: Some(some_amount), amount_max_minor: Some(some_amount), ..base.clone() },
            true,
        ),
        ("at least zero", HistoryQuery { amount_min_minor: Some(0), ..base.clone() }, true),
        ("deposits", HistoryQuery { kind: Some(TransferKind::Deposit), ..base.clone() }, true),
        ("internal", HistoryQuery { kind: Some(TransferKind::Internal), ..base.clone() }, true),
        ("withdrawals", HistoryQuery { kind: Some(TransferKind::Withdrawal), ..base.clone() }, true),
        ("fees", HistoryQuery { kind: Some(TransferKind::Fee), ..base.clone() }, true),
        ("loans", HistoryQuery { kind: Some(TransferKind::Loan), ..base.clone() }, false),
        (
            "everything at once",
            HistoryQuery {
                from: Some(at(5)),
                to: Some(at(50)),
                direction: Some(Direction::Debit),
                kind: Some(TransferKind::Internal),
                amount_min_minor: Some(300),
                amount_max_minor: Some(1_000),
                ..base.clone()
            },
            true,
        ),
        (
            "credits of internal transfers",
            HistoryQuery { direction: Some(Direction::Credit), kind: Some(TransferKind::Internal), ..base.clone() },
            true,
        ),
    ];
    for (what, query, nonempty) in queries {
        let expected: Vec<Posting> = full.iter().filter(|p| query.matches(p)).cloned().collect();
        let model: Vec<Line> = model_lines(&w.ops, w.a.id).into_iter().filter(|l| model_selects(&query, l)).collect();
        assert_eq!(
            expected.iter().map(line_of).collect::<Vec<_>>(),
            model,
            "{what}: HistoryQuery::matches disagrees with the model"
        );
        assert_eq!(
            !expected.is_empty(),
            nonempty,
            "{what}: the case expects {} lines",
            if nonempty { "some" } else { "no" }
        );
        for limit in [2, PAGE_LEN_MAX] {
            let q = HistoryQuery { limit: Some(limit), ..query.clone() };
            let joined: Vec<Posting> = pages(&h, w.a.id, &q).await.into_iter().flatten().collect();
            assert_eq!(joined, expected, "{what}, pages of {limit}: the store's filter disagrees");
        }
        // A cursor combines with the filter.
        if let Some(mid) = expected.get(expected.len() / 2) {
            let q = HistoryQuery { before_seq: Some(mid.seq), limit: Some(PAGE_LEN_MAX), ..query.clone() };
            let rest: Vec<Posting> = expected.iter().filter(|p| p.seq < mid.seq).cloned().collect();
            assert_eq!(ok(what, h.ledger.history(w.a.id, &q).await).items, rest, "{what}: filter with a cursor");
        }
    }
    h.check_invariants().await;
}

/// Queries out of bounds are `InvalidField`; unknown accounts are `AccountNotFound`.
pub async fn history_invalid<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", EUR).await;
    h.fund(&a, 10_00).await;
    let now = h.now();
    let base = HistoryQuery::default();
    let cases = [
        ("limit 0", HistoryQuery { limit: Some(0), ..base.clone() }, "limit"),
        ("limit 501", HistoryQuery { limit: Some(PAGE_LEN_MAX + 1), ..base.clone() }, "limit"),
        ("limit u32::MAX", HistoryQuery { limit: Some(u32::MAX), ..base.clone() }, "limit"),
        ("from equals to", HistoryQuery { from: Some(now), to: Some(now), ..base.clone() }, "from"),
        (
            "from after to",
            HistoryQuery { from: Some(now + TimeDelta::seconds(1)), to: Some(now), ..base.clone() },
            "from",
        ),
        (
            "min above max",
            HistoryQuery { amount_min_minor: Some(101), amount_max_minor: Some(100), ..base.clone() },
            "amount_min",
        ),
        ("negative min", HistoryQuery { amount_min_minor: Some(-1), ..base.clone() }, "amount"),
        ("negative max", HistoryQuery { amount_max_minor: Some(-1), ..base.clone() }, "amount"),
    ];
    for (what, q, field) in cases {
        h.rejects(what, h.ledger.history(a.id, &q), invalid(field)).await;
    }
    let q = HistoryQuery {
        limit: Some(PAGE_LEN_MAX),
        from: Some(now),
        to: Some(now + TimeDelta::seconds(1)),
        ..base.clone()
    };
    assert_eq!(ok("the bounds themselves", h.ledger.history(a.id, &q).await).items.len(), 1);
    let unknown = AccountId::new_v7();
    h.rejects("unknown account", h.ledger.history(unknown, &base), LedgerError::AccountNotFound(unknown)).await;
    let unused_system = SystemAccount::LoanFunding.id(EUR);
    h.rejects(
        "a system account not opened yet",
        h.ledger.history(unused_system, &base),
        LedgerError::AccountNotFound(unused_system),
    )
    .await;
    h.check_invariants().await;
}
