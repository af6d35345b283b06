//! Concurrent cases: many tasks moving money at once on hot accounts, checked against a
//! single-threaded model replayed in the store's commit order; and racing requests on one id.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::StoreFactory;
use super::fixtures::{ok, request};
use super::harness::Harness;
use super::model::replay_in_commit_order;
use crate::account::{AccountKind, NewAccount, SystemAccount};
use crate::customer::Customer;
use crate::error::{Error, LedgerError};
use crate::ids::{AccountId, TransferId};
use crate::money::{Currency, Money};
use crate::service::{Ledger, TransferReceipt};
use crate::store::Store;
use crate::transfer::{Transfer, TransferKind, TransferRequest, TransferState, VoidReason};

/// The seed used unless `BP_CONFORMANCE_SEED` gives another.
const SEED_DEFAULT: u64 = 0x5EED_0B0A_2026_0001;
/// Customer accounts in the main currency.
const EUR_ACCOUNTS: usize = 300;
/// Customer accounts in a second currency.
const USD_ACCOUNTS: usize = 12;
/// Customers owning them.
const CUSTOMERS: usize = 16;
/// Concurrent tasks.
const TASKS: usize = 32;
/// Transfers each task sends, one after the other.
const TRANSFERS_PER_TASK: usize = 100;
/// Hot accounts, which 80% of transfers touch.
const HOT: usize = 3;
/// Largest funding of an account, in minor units.
const FUND_MAX_MINOR: i64 = 50_000;
/// Largest transfer, in minor units: large enough that some transfers meet empty accounts.
const AMOUNT_MAX_MINOR: i64 = 20_000;
/// Overdraft limit of every fifth account, in minor units.
const OVERDRAFT_MINOR: i64 = 5_000;

fn seed() -> u64 {
    std::env::var("BP_CONFORMANCE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED_DEFAULT)
}

/// Prints the seed when a panic unwinds through the case, so that the run can be replayed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("replay with BP_CONFORMANCE_SEED={}", self.0);
        }
    }
}

/// Joins every task of `set`, re-raising the first panic.
pub(crate) async fn join_all<T: 'static>(mut set: JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(v) => out.push(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a task was cancelled: {e}"),
        }
    }
    out
}

/// One account of the workload.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: AccountId,
    currency: Currency,
    overdraft_minor: i64,
}

/// A random pair of distinct accounts from `pool`.
fn pair(rng: &mut StdRng, pool: &[Slot]) -> (Slot, Slot) {
    let i = rng.random_range(0..pool.len());
    let mut j = rng.random_range(0..pool.len() - 1);
    if j >= i {
        j += 1;
    }
    (pool[i], pool[j])
}

/// ~3,000 random internal transfers from 32 tasks, 80% on three hot accounts, some refused for
/// lack of funds. The accepted ones, replayed in the outbox's commit order on a single-threaded
/// model, must give every event's balance and the final balances; no account ever goes below its
/// overdraft limit; every currency sums to zero; each accepted transfer has its two postings
/// and every refused one none.
pub async fn concurrent_transfers<F: StoreFactory>(f: &F) {
    let seed = seed();
    let _seed = SeedOnFailure(seed);
    let h = Harness::new(f).await;
    let mut rng = StdRng::seed_from_u64(seed);

    // Customers, then accounts opened and funded from many tasks at once.
    let mut customers: Vec<Customer> = Vec::with_capacity(CUSTOMERS);
    for i in 0..CUSTOMERS {
        customers.push(h.customer(&format!("load{i:02}")).await);
    }
    let mut plan: Vec<(NewAccount, i64)> = Vec::with_capacity(EUR_ACCOUNTS + USD_ACCOUNTS);
    for i in 0..EUR_ACCOUNTS + USD_ACCOUNTS {
        let currency = if i < EUR_ACCOUNTS { Currency::EUR } else { Currency::USD };
        let req = NewAccount {
            id: AccountId::new_v7(),
            customer_id: customers[i % CUSTOMERS].id,
            kind: if i % 7 == 0 { AccountKind::Savings } else { AccountKind::Current },
            currency,
            overdraft_limit_minor: if i % 5 == 0 { OVERDRAFT_MINOR } else { 0 },
        };
        h.track_account(req.id);
        h.track_currency(currency);
        plan.push((req, rng.random_range(0..=FUND_MAX_MINOR)));
    }
    let mut set = JoinSet::new();
    for chunk in plan.chunks(plan.len().div_ceil(TASKS)) {
        let ledger: Ledger<F::S> = h.ledger.clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            let mut funded = Vec::new();
            for (req, fund_minor) in chunk {
                let account = ok("open account", ledger.open_account(req.clone()).await);
                assert_eq!(account.id, req.id);
                if fund_minor > 0 {
                    let id = TransferId::new_v7();
                    let r = ok("fund", ledger.fund(id, req.id, Money::new(fund_minor, req.currency)).await);
                    funded.push(r.transfer);
                }
            }
            funded
        });
    }
    let fundings: Vec<Transfer> = join_all(set).await.into_iter().flatten().collect();
    let slots: Vec<Slot> = plan
        .iter()
        .map(|(req, _)| Slot { id: req.id, currency: req.currency, overdraft_minor: req.overdraft_limit_minor })
        .collect();
    let (eur, usd) = slots.split_at(EUR_ACCOUNTS);
    let hot = &eur[..HOT];

    // The workload: each task draws its transfers from its own seeded generator.
    let mut set = JoinSet::new();
    for task in 0..TASKS {
        let ledger: Ledger<F::S> = h.ledger.clone();
        let (eur, usd, hot) = (eur.to_vec(), usd.to_vec(), hot.to_vec());
        let mut rng =
            StdRng::seed_from_u64(seed ^ (u64::try_from(task).unwrap_or(0) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        set.spawn(async move {
            let mut results: Vec<(TransferRequest, Result<Transfer, LedgerError>)> = Vec::new();
            for _ in 0..TRANSFERS_PER_TASK {
                let roll = rng.random_range(0..100);
                let (debit, credit) = if roll < 80 {
                    let hot = hot[rng.random_range(0..hot.len())];
                    let other = loop {
                        let o = eur[rng.random_range(0..eur.len())];
                        if o.id != hot.id {
                            break o;
                        }
                    };
                    if rng.random_range(0..2) == 0 { (hot, other) } else { (other, hot) }
                } else if roll < 95 {
                    pair(&mut rng, &eur)
                } else {
                    pair(&mut rng, &usd)
                };
                let amount = rng.random_range(1..=AMOUNT_MAX_MINOR);
                let req = request(TransferKind::Internal, debit.id, credit.id, amount, debit.currency);
                match ledger.transfer(req.clone()).await {
                    Ok(TransferReceipt { transfer, replayed }) => {
                        assert!(!replayed, "a new transfer was answered as a replay");
                        assert_eq!(transfer.state, TransferState::Posted);
                        assert!(transfer.was_requested_by(&req), "the answer is another transfer: {transfer:?}");
                        results.push((req, Ok(transfer)));
                    }
                    Err(Error::Ledger(e @ LedgerError::InsufficientFunds { account })) => {
                        assert_eq!(account, req.debit_account, "insufficient funds names the debit account");
                        results.push((req, Err(e)));
                    }
                    Err(e) => panic!("transfer {req:?} failed with {e:?}; only InsufficientFunds is expected"),
                }
            }
            results
        });
    }
    let results: Vec<(TransferRequest, Result<Transfer, LedgerError>)> =
        join_all(set).await.into_iter().flatten().collect();
    let accepted: Vec<&Transfer> = fundings.iter().chain(results.iter().filter_map(|(_, r)| r.as_ref().ok())).collect();
    let rejected: Vec<&TransferRequest> = results.iter().filter(|(_, r)| r.is_err()).map(|(req, _)| req).collect();
    h.track_transfers(accepted.iter().map(|t| t.id).chain(rejected.iter().map(|r| r.id)));
    let workload_accepted = results.len() - rejected.len();
    assert_eq!(results.len(), TASKS * TRANSFERS_PER_TASK);
    assert!(!rejected.is_empty(), "the workload must meet insufficient funds to test them (seed {seed})");
    assert!(workload_accepted >= results.len() / 4, "too few transfers accepted: {workload_accepted} (seed {seed})");
    let hot_ids: HashSet<AccountId> = hot.iter().map(|s| s.id).collect();
    assert!(
        accepted.iter().any(|t| hot_ids.contains(&t.debit_account))
            && accepted.iter().any(|t| hot_ids.contains(&t.credit_account)),
        "the hot accounts must both send and receive"
    );

    // Replay the accepted transfers in commit order on a single-threaded model.
    let outbox = h.outbox().await;
    let overdraft: HashMap<AccountId, i64> = slots.iter().map(|s| (s.id, s.overdraft_minor)).collect();
    let model = replay_in_commit_order(&outbox, &accepted, &overdraft);
    for req in &rejected {
        assert_eq!(ok("read", h.store().transfer(req.id).await), None, "refused transfer {} is stored", req.id);
    }
    for s in &slots {
        let account = h.get_account(s.id).await;
        assert_eq!(account.posted_minor, model.get(&s.id).copied().unwrap_or(0), "final balance of {}", s.id);
        assert_eq!(account.held_minor, 0);
    }
    for currency in [Currency::EUR, Currency::USD] {
        let id = SystemAccount::Funding.id(currency);
        assert_eq!(h.get_account(id).await.posted_minor, model.get(&id).copied().unwrap_or(0), "funding of {currency}");
    }
    let totals = ok("totals", h.store().totals().await);
    for t in &totals {
        assert_eq!(t.posted_minor, 0, "{} must sum to zero", t.currency);
    }
    assert_eq!(
        totals.iter().map(|t| (t.currency, t.accounts)).collect::<HashMap<_, _>>(),
        // With the EUR funding account and the interbank clearing account (open from the start).
        HashMap::from([(Currency::EUR, 302), (Currency::USD, 13)]),
        "accounts per currency"
    );
    for t in &accepted {
        assert_eq!(&&h.get_transfer(t.id).await, t, "the store returns every accepted transfer as answered");
    }
    // Postings (exactly two per accepted transfer, none per refused), balance chains, event
    // numbering and holds.
    h.check_invariants().await;
}

/// A request on its way to the ledger, from a racing task.
type Sent = Pin<Box<dyn Future<Output = Result<TransferReceipt, Error>> + Send>>;

/// Runs one task per request; each waits at a shared barrier, then sends its request. The
/// answers come back in the order of `requests`, with their index.
async fn race<S: Store + ?Sized, T: Send + 'static>(
    ledger: &Ledger<S>,
    requests: Vec<T>,
    send: fn(Ledger<S>, T) -> Sent,
) -> Vec<(usize, Result<TransferReceipt, Error>)> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let mut set = JoinSet::new();
    for (i, req) in requests.into_iter().enumerate() {
        let ledger = ledger.clone();
        let barrier = Arc::clone(&barrier);
        set.spawn(async move {
            barrier.wait().await;
            (i, send(ledger, req).await)
        });
    }
    let mut out = join_all(set).await;
    out.sort_by_key(|(i, _)| *i);
    out
}

fn send_transfer<S: Store + ?Sized>(ledger: Ledger<S>, req: TransferRequest) -> Sent {
    Box::pin(async move { ledger.transfer(req).await })
}

fn send_finish<S: Store + ?Sized>(ledger: Ledger<S>, (id, void): (TransferId, bool)) -> Sent {
    Box::pin(async move {
        if void { ledger.void_pending(id, VoidReason::Cancelled).await } else { ledger.post_pending(id).await }
    })
}

/// Requests racing on one id: 16 copies of one transfer move money once and all get the same
/// answer; 16 variants of one id accept exactly the requests equal to the winner; 16 transfers
/// racing for the same funds never overdraw; a post and a void racing on one pending transfer
/// have exactly one winner.
pub async fn concurrent_idempotency<F: StoreFactory>(f: &F) {
    const RACERS: usize = 16;
    let h = Harness::new(f).await;
    let a = h.customer_account("ada", Currency::EUR).await;
    let b = h.customer_account("bob", Currency::EUR).await;
    h.fund(&a, 1_000_00).await;

    // The same request, 16 times at once.
    let req = request(TransferKind::Internal, a.id, b.id, 10_00, Currency::EUR);
    h.track_transfers([req.id]);
    let results = race(&h.ledger, vec![req.clone(); RACERS], send_transfer::<F::S>).await;
    let receipts: Vec<TransferReceipt> = results.into_iter().map(|(i, r)| ok(&format!("racer {i}"), r)).collect();
    let stored = h.get_transfer(req.id).await;
    assert!(stored.was_requested_by(&req));
    for r in &receipts {
        assert_eq!(r.transfer, stored, "every racer gets the one transfer");
    }
    assert_eq!(receipts.iter().filter(|r| !r.replayed).count(), 1, "exactly one racer applied the transfer");
    assert_eq!(h.get_account(a.id).await.posted_minor, 990_00, "money moved once");
    assert_eq!(h.get_account(b.id).await.posted_minor, 10_00, "money moved once");

    // 16 variants of one id: the requests equal to the winner succeed, the others conflict.
    let id = TransferId::new_v7();
    h.track_transfers([id]);
    let variants: Vec<TransferRequest> = (0..RACERS)
        .map(|i| TransferRequest {
            id,
            ..request(TransferKind::Internal, a.id, b.id, 1_00 + i64::try_from(i % 4).unwrap_or(0), Currency::EUR)
        })
        .collect();
    let results = race(&h.ledger, variants.clone(), send_transfer::<F::S>).await;
    let winner = h.get_transfer(id).await;
    let mut applied = 0;
    for (i, result) in results {
        if winner.was_requested_by(&variants[i]) {
            let r = ok(&format!("variant {i} equal to the winner"), result);
            assert_eq!(r.transfer, winner);
            applied += usize::from(!r.replayed);
        } else {
            super::harness::expect_rule(
                &format!("variant {i}"),
                result,
                &LedgerError::IdempotencyConflict { id: id.to_string() },
            );
        }
    }
    assert_eq!(applied, 1, "exactly one variant was applied");
    assert_eq!(h.get_account(a.id).await.posted_minor, 990_00 - winner.amount.amount_minor(), "money moved once");

    // 16 different transfers racing for the same funds: exactly three fit.
    let c = h.customer_account("cyd", Currency::EUR).await;
    h.fund(&c, 100_00).await;
    let spends: Vec<TransferRequest> =
        (0..RACERS).map(|_| request(TransferKind::Internal, c.id, b.id, 25_01, Currency::EUR)).collect();
    h.track_transfers(spends.iter().map(|r| r.id));
    let results = race(&h.ledger, spends, send_transfer::<F::S>).await;
    let mut won = 0;
    for (i, result) in results {
        match result {
            Ok(r) => won += usize::from(!r.replayed),
            Err(e) => super::harness::expect_rule(
                &format!("spend {i}"),
                Err::<(), _>(e),
                &LedgerError::InsufficientFunds { account: c.id },
            ),
        }
    }
    assert_eq!(won, 3, "exactly three spends of 25.01 fit in 100.00");
    assert_eq!(h.get_account(c.id).await.posted_minor, 100_00 - 3 * 25_01);

    // A post and a void racing on each of eight pending transfers: one wins, the other is refused.
    let until = h.now() + chrono::TimeDelta::hours(1);
    let mut finishes = Vec::new();
    for _ in 0..8 {
        let p = TransferRequest {
            hold_until: Some(until),
            ..request(TransferKind::Internal, a.id, b.id, 1_00, Currency::EUR)
        };
        ok("hold", h.transfer(p.clone()).await);
        finishes.push((p.id, false));
        finishes.push((p.id, true));
    }
    let results = race(&h.ledger, finishes.clone(), send_finish::<F::S>).await;
    // Per pending transfer: (whether the racer voided, its answer).
    type Answers = Vec<(bool, Result<TransferReceipt, Error>)>;
    let mut by_id: HashMap<TransferId, Answers> = HashMap::new();
    for (i, result) in results {
        by_id.entry(finishes[i].0).or_default().push((finishes[i].1, result));
    }
    for (id, outcomes) in by_id {
        let stored = h.get_transfer(id).await;
        let winner_is_void = match stored.state {
            TransferState::Posted => false,
            TransferState::Voided => true,
            other => panic!("transfer {id} ended {other:?}"),
        };
        for (void, result) in outcomes {
            if void == winner_is_void {
                let r = ok("the winner", result);
                assert_eq!((r.transfer, r.replayed), (stored.clone(), false));
            } else {
                let to = if void { TransferState::Voided } else { TransferState::Posted };
                super::harness::expect_rule(
                    "the loser",
                    result,
                    &LedgerError::InvalidTransition { transfer: id, from: stored.state, to },
                );
            }
        }
    }
    assert_eq!(h.get_account(a.id).await.held_minor, 0, "every hold was released");
    h.check_invariants().await;
}
