//! What the SQLite store promises beyond the store conformance suite: the ledger survives closing
//! and reopening (including the unindexed tails of the deferred per-account index), idempotency
//! survives a restart, older databases are upgraded, newer or inconsistent ones are refused, the
//! file is in WAL mode, and a queue of one still serves many concurrent senders.

// Amounts are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

use std::path::Path;
use std::sync::Arc;

use bp_core::account::{Account, AccountKind, AccountStatus, NewAccount, SystemAccount};
use bp_core::clock::ManualClock;
use bp_core::customer::{Customer, CustomerUpdate, KycStatus};
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::invariants::{self, AccountBooks, Books, History, Scope};
use bp_core::money::{Currency, Money};
use bp_core::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page, Store};
use bp_core::testing::books::{read_events, read_outbox};
use bp_core::testing::fixtures::{deposit, ok, person, request, start_time};
use bp_core::transfer::{Posting, Transfer, TransferKind, TransferRequest, TransferState, VoidReason};
use bp_core::{Error, Ledger, LedgerError, StoreErrorKind, Timestamp};
use bp_storage::sqlite::{SCHEMA_VERSION, SqliteConfig, SqliteStore};
use chrono::TimeDelta;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

const EUR: Currency = Currency::EUR;
const USD: Currency = Currency::USD;

/// The seed of the random traffic unless `BP_SQLITE_TEST_SEED` gives another.
const SEED_DEFAULT: u64 = 0x5EED_5A1E_2026_0002;

fn seed() -> u64 {
    let seed = std::env::var("BP_SQLITE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED_DEFAULT);
    eprintln!("random traffic from seed {seed} (replay with BP_SQLITE_TEST_SEED={seed})");
    seed
}

fn config(clock: &Arc<ManualClock>) -> SqliteConfig {
    SqliteConfig { clock: Arc::clone(clock) as _, ..SqliteConfig::default() }
}

fn open(path: &Path, config: SqliteConfig) -> SqliteStore {
    SqliteStore::open(path, config).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

async fn customer(ledger: &Ledger<SqliteStore>, username: &str) -> Customer {
    ok("open customer", ledger.open_customer(person(username)).await)
}

async fn account(ledger: &Ledger<SqliteStore>, owner: CustomerId, currency: Currency, overdraft_minor: i64) -> Account {
    let req = NewAccount {
        id: AccountId::new_v7(),
        customer_id: owner,
        kind: AccountKind::Current,
        currency,
        overdraft_limit_minor: overdraft_minor,
    };
    ok("open account", ledger.open_account(req).await)
}

/// Every page of an account's history, newest first, as the store cut them.
async fn history_pages(store: &SqliteStore, id: AccountId, page_len: u32) -> Vec<Page<Posting>> {
    let mut q = HistoryQuery { limit: Some(page_len), ..HistoryQuery::default() };
    let mut pages = Vec::new();
    loop {
        let page = ok("postings", store.postings(id, &q).await);
        let next = page.next_cursor;
        pages.push(page);
        match next {
            Some(c) => {
                assert!(q.before_seq.is_none_or(|b| c < b), "history cursors must go down");
                q.before_seq = Some(c);
            }
            None => return pages,
        }
    }
}

/// Everything observable about a set of records.
#[derive(Debug, PartialEq)]
struct Observed {
    customers: Vec<(Option<Customer>, Vec<Account>)>,
    accounts: Vec<Option<Account>>,
    history: Vec<Vec<Page<Posting>>>,
    events: Vec<Vec<Event>>,
    transfers: Vec<Option<Transfer>>,
    outbox: Vec<OutboxEntry>,
    totals: Vec<CurrencyTotal>,
    pending_expired: Vec<TransferId>,
    /// Each account's `pending_of`, in the order of `accounts`.
    pending: Vec<Vec<Transfer>>,
}

impl Observed {
    async fn read(store: &SqliteStore, known: &Known, now: Timestamp) -> Self {
        let mut customers = Vec::new();
        for id in &known.customers {
            customers
                .push((ok("customer", store.customer(*id).await), ok("accounts_of", store.accounts_of(*id).await)));
        }
        let mut accounts = Vec::new();
        let mut history = Vec::new();
        let mut all_events = Vec::new();
        let mut pending = Vec::new();
        for id in known.accounts() {
            accounts.push(ok("account", store.account(id).await));
            pending.push(ok("pending_of", store.pending_of(id, PAGE_LEN_MAX).await));
            // An odd page length, so that pages end in the middle of the indexed part and of the
            // published tail.
            history.push(history_pages(store, id, 37).await);
            all_events.push(read_events(store, id, 41).await);
        }
        let mut transfers = Vec::new();
        for id in &known.transfers {
            transfers.push(ok("transfer", store.transfer(*id).await));
        }
        Self {
            customers,
            accounts,
            history,
            events: all_events,
            transfers,
            outbox: read_outbox(store, 333).await,
            totals: ok("totals", store.totals().await),
            pending_expired: ok(
                "pending_expired",
                store.pending_expired(now + TimeDelta::days(365), PAGE_LEN_MAX).await,
            ),
            pending,
        }
    }

    /// Checks what was read with `invariants::check` (the known accounts and transfers are all
    /// of the ledger's), and that each payer lists its pending transfers in order.
    fn check(&self) {
        let mut books = Books::new(Scope::Ledger);
        for ((account, pages), events) in self.accounts.iter().zip(&self.history).zip(&self.events) {
            let Some(account) = account else {
                assert!(events.is_empty() && pages.iter().all(|p| p.items.is_empty()), "a missing account has records");
                continue;
            };
            // Pages come newest first; books hold histories oldest first.
            let mut postings: Vec<Posting> = pages.iter().flat_map(|p| p.items.iter().cloned()).collect();
            postings.reverse();
            let history = Some(History::whole(events.clone(), postings));
            books.accounts.push(AccountBooks { account: account.clone(), history });
        }
        books.transfers = Some(self.transfers.iter().flatten().cloned().collect());
        books.outbox = Some(self.outbox.clone());
        books.totals = Some(self.totals.clone());
        if let Err(violation) = invariants::check(&books) {
            panic!("the ledger read: {violation}");
        }
        // Each account lists the pending transfers it pays; many were made in one batch, at one
        // instant, so their order is the order of their ids.
        for (account, listed) in self.accounts.iter().zip(&self.pending) {
            let Some(account) = account else { continue };
            let mut expected: Vec<&Transfer> = self
                .transfers
                .iter()
                .flatten()
                .filter(|t| t.state == TransferState::Pending && t.debit_account == account.id)
                .collect();
            expected.sort_by_key(|t| (t.created_at, t.id));
            assert_eq!(listed.iter().collect::<Vec<_>>(), expected, "account {}: pending_of", account.id);
        }
    }
}

/// The ids a test made.
#[derive(Debug, Default)]
struct Known {
    customers: Vec<CustomerId>,
    accounts: Vec<AccountId>,
    currencies: Vec<Currency>,
    transfers: Vec<TransferId>,
}

impl Known {
    fn accounts(&self) -> Vec<AccountId> {
        let system = self.currencies.iter().flat_map(|c| SystemAccount::ALL.map(|s| s.id(*c)));
        self.accounts.iter().copied().chain(system).collect()
    }
}

/// Events in the per-account index, read from the file directly, and the events of the accounts
/// `observed` read (each account's events are numbered 1 on without gaps).
fn index_and_journal_events(path: &Path, observed: &Observed) -> (i64, i64) {
    let conn = ok("open with rusqlite", rusqlite::Connection::open(path));
    let indexed: i64 =
        ok("count", conn.query_row("SELECT coalesce(sum(len), 0) FROM account_journal", [], |r| r.get(0)));
    let events = observed.accounts.iter().flatten().map(|a| a.last_event_seq).sum::<u64>();
    (indexed, i64::try_from(events).expect("a count"))
}

/// Sends random traffic from `tasks` concurrent tasks: internal transfers (some rejected for
/// want of funds), pending transfers posted or voided later or left pending.
async fn random_traffic(
    ledger: &Ledger<SqliteStore>,
    clock: &ManualClock,
    known: &mut Known,
    accounts: &[Account],
    seed: u64,
    tasks: usize,
    per_task: usize,
) {
    let mut set = JoinSet::new();
    let hold_until = clock_now(clock) + TimeDelta::hours(1);
    for task in 0..tasks {
        let ledger = ledger.clone();
        let accounts = accounts.to_vec();
        let mut rng = StdRng::seed_from_u64(seed ^ u64::try_from(task).unwrap_or(0));
        set.spawn(async move {
            let mut ids = Vec::new();
            let mut pending = Vec::new();
            for _ in 0..per_task {
                let from = &accounts[rng.random_range(0..accounts.len())];
                let to = loop {
                    let to = &accounts[rng.random_range(0..accounts.len())];
                    if to.id != from.id && to.currency == from.currency {
                        break to;
                    }
                };
                let mut req =
                    request(TransferKind::Internal, from.id, to.id, rng.random_range(1..=30_00), from.currency);
                if rng.random_range(0..10) == 0 {
                    req.hold_until = Some(hold_until);
                }
                ids.push(req.id);
                match ledger.transfer(req.clone()).await {
                    Ok(r) => {
                        assert!(!r.replayed);
                        if req.hold_until.is_some() {
                            pending.push(req.id);
                        }
                    }
                    // Want of funds, or (after `populate`) the frozen account.
                    Err(Error::Ledger(
                        LedgerError::InsufficientFunds { .. } | LedgerError::AccountNotActive { .. },
                    )) => {}
                    Err(e) => panic!("transfer {}: {e:?}", req.id),
                }
            }
            for (i, id) in pending.into_iter().enumerate() {
                let done = match i % 3 {
                    0 => ledger.post_pending(id).await,
                    1 => ledger.void_pending(id, VoidReason::Cancelled).await,
                    _ => continue,
                };
                ok("finish a pending transfer", done);
            }
            ids
        });
    }
    while let Some(ids) = set.join_next().await {
        known.transfers.extend(ok("task", ids));
    }
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    bp_core::clock::Clock::now(clock)
}

/// Opens customers with accounts in two currencies, funds them, and sends random traffic.
async fn populate(ledger: &Ledger<SqliteStore>, clock: &ManualClock, known: &mut Known, seed: u64) -> Vec<Account> {
    known.currencies = vec![EUR, USD];
    let mut accounts = Vec::new();
    for c in 0..60 {
        let cust = customer(ledger, &format!("user{c}")).await;
        known.customers.push(cust.id);
        for a in 0..5 {
            let currency = if a == 4 { USD } else { EUR };
            let acc = account(ledger, cust.id, currency, if a == 0 { 10_00 } else { 0 }).await;
            known.accounts.push(acc.id);
            let fund = deposit(&acc, 200_00);
            known.transfers.push(fund.id);
            ok("fund", ledger.transfer(fund).await);
            accounts.push(acc);
        }
    }
    random_traffic(ledger, clock, known, &accounts, seed, 64, 60).await;
    // A profile change and a frozen account are part of the state too.
    ok(
        "update a customer",
        ledger
            .update_customer(
                known.customers[0],
                None,
                CustomerUpdate { kyc: Some(KycStatus::Pending), ..CustomerUpdate::default() },
            )
            .await,
    );
    ok("freeze", ledger.set_account_status(accounts[7].id, AccountStatus::Frozen).await);
    accounts
}

/// The ledger read after closing and reopening is the ledger read before, also when the
/// deferred index still had unindexed tails at the close; and the reopened store keeps writing
/// where the first left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopen_keeps_everything() {
    let seed = seed();
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("ledger.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    let mut known = Known::default();

    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let accounts = populate(&ledger, &clock, &mut known, seed).await;
    clock.set(clock_now(&clock) + TimeDelta::seconds(7));
    let before = Observed::read(ledger.store(), &known, clock_now(&clock)).await;
    before.check();
    assert!(before.transfers.iter().flatten().any(|t| t.state == TransferState::Pending), "some holds stay pending");
    let store = SqliteStore::clone(ledger.store());
    drop(ledger);
    ok("close", store.close().await);
    assert!(
        !path.with_extension("db-wal").exists(),
        "close waits until every connection is closed, and the last one removes the WAL"
    );

    // The test is only worth its name if the close left events outside the per-account index.
    let (indexed, journal_events) = index_and_journal_events(&path, &before);
    assert!(indexed < journal_events, "no unindexed tail at the close ({indexed} of {journal_events} indexed)");

    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let after = Observed::read(ledger.store(), &known, clock_now(&clock)).await;
    assert_eq!(before, after, "the reopened store must read the same ledger");

    // It goes on writing after the recovered tails: more traffic, then the same again.
    clock.set(clock_now(&clock) + TimeDelta::seconds(11));
    random_traffic(&ledger, &clock, &mut known, &accounts, seed.wrapping_add(1), 32, 40).await;
    let before = Observed::read(ledger.store(), &known, clock_now(&clock)).await;
    before.check();
    assert_ne!(before.outbox.len(), after.outbox.len(), "the second round wrote events");
    drop(ledger);
    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let after = Observed::read(ledger.store(), &known, clock_now(&clock)).await;
    assert_eq!(before, after, "the store reopened after a drop (no close) must read the same ledger");
}

/// A transfer applied before a restart is replayed after it, even when the payer has since been
/// frozen, and conflicts when its id comes with another request; pending holds carry over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_across_restart() {
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("ledger.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let owner = customer(&ledger, "alice").await;
    let a = account(&ledger, owner.id, EUR, 0).await;
    let b = account(&ledger, owner.id, EUR, 0).await;
    ok("fund", ledger.transfer(deposit(&a, 100_00)).await);
    let req = request(TransferKind::Internal, a.id, b.id, 10_00, EUR);
    let first = ok("transfer", ledger.transfer(req.clone()).await);
    assert!(!first.replayed);
    let hold = TransferRequest {
        hold_until: Some(start_time() + TimeDelta::hours(1)),
        ..request(TransferKind::Internal, a.id, b.id, 5_00, EUR)
    };
    ok("hold", ledger.transfer(hold.clone()).await);
    let store = SqliteStore::clone(ledger.store());
    drop(ledger);
    ok("close", store.close().await);

    // A small transfer cache as well, so that nothing is remembered but the database.
    let config = SqliteConfig { transfer_cache_len_max: 0, ..config(&clock) };
    let ledger = Ledger::new(Arc::new(open(&path, config)));
    let store = ledger.store();
    let balances = |a: Option<Account>| a.map(|a| (a.posted_minor, a.held_minor, a.last_event_seq));
    let state = || async {
        (
            balances(ok("a", store.account(a.id).await)),
            balances(ok("b", store.account(b.id).await)),
            read_outbox(&**store, PAGE_LEN_MAX).await.len(),
        )
    };
    let before = state().await;
    assert_eq!((before.0, before.1), (Some((90_00, 5_00, 4)), Some((10_00, 0, 2))));

    let again = ok("replay", ledger.transfer(req.clone()).await);
    assert!(again.replayed, "the same request after the restart is a replay");
    assert_eq!(again.transfer, first.transfer);
    assert_eq!(state().await, before, "a replay moves no money");

    let other = TransferRequest { amount: Money::new(11_00, EUR), ..req.clone() };
    match ledger.transfer(other).await {
        Err(Error::Ledger(LedgerError::IdempotencyConflict { id })) => {
            assert_eq!(id, req.id.to_string())
        }
        other => {
            panic!("the same id with another amount: expected IdempotencyConflict, got {other:?}")
        }
    }
    assert_eq!(state().await, before, "a conflict moves no money");

    // The rules answer a known id before looking at the accounts: frozen payer, still a replay.
    ok("freeze", ledger.set_account_status(a.id, AccountStatus::Frozen).await);
    let again = ok("replay with the payer frozen", ledger.transfer(req.clone()).await);
    assert!(again.replayed);
    let other = TransferRequest { amount: Money::new(12_00, EUR), ..req.clone() };
    match ledger.transfer(other).await {
        Err(Error::Ledger(LedgerError::IdempotencyConflict { .. })) => {}
        other => panic!("another amount with the payer frozen: expected IdempotencyConflict, got {other:?}"),
    }
    ok("unfreeze", ledger.set_account_status(a.id, AccountStatus::Active).await);

    // The hold survived the restart and can be posted; its request then replays as posted.
    let posted = ok("post the hold", ledger.post_pending(hold.id).await);
    assert_eq!(posted.transfer.state, TransferState::Posted);
    let again = ok("replay the hold's request", ledger.transfer(hold).await);
    assert_eq!((again.replayed, again.transfer), (true, posted.transfer));
    let a_now = ok("a", store.account(a.id).await).expect("a exists");
    assert_eq!((a_now.posted_minor, a_now.held_minor), (85_00, 0));
}

/// A database of schema version 2, with a pending transfer in it, gets the index of the payers'
/// pending transfers (version 3) when it is opened, and lists the transfer through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_upgrades_with_its_pending_transfers() {
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("v2.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let owner = customer(&ledger, "vera").await;
    let a = account(&ledger, owner.id, EUR, 0).await;
    let b = account(&ledger, owner.id, EUR, 0).await;
    ok("fund", ledger.transfer(deposit(&a, 10_00)).await);
    let hold = TransferRequest {
        hold_until: Some(start_time() + TimeDelta::hours(1)),
        ..request(TransferKind::Internal, a.id, b.id, 4_00, EUR)
    };
    let held = ok("hold", ledger.transfer(hold).await).transfer;
    let outbox = read_outbox(ledger.store().as_ref(), 7).await;
    let events_of_a = read_events(ledger.store().as_ref(), a.id, 3).await;
    let store = SqliteStore::clone(ledger.store());
    drop(ledger);
    ok("close", store.close().await);

    // Back to what version 2 left: the same tables and rows, without the indexes of versions 3
    // and 4, the passkeys of version 5, the session activity of version 6, the service records
    // of version 7, the leases of version 8, the transient records of version 9 and the shared
    // states of version 10, and with the journal one row per entry as before version 11.
    let index = "SELECT count(*) FROM sqlite_schema WHERE type = 'index' \
                 AND name IN ('transfers_pending_by_debit', 'audit_by_customer')";
    {
        let conn = ok("open with rusqlite", rusqlite::Connection::open(&path));
        let downgrade = "DROP INDEX transfers_pending_by_debit; DROP INDEX audit_by_customer; DROP TABLE passkeys; \
                         DROP TABLE session_activity; DROP TABLE service_records; DROP TABLE leases; \
                         DROP TABLE transients; DROP TABLE shared_states; DROP TABLE journal_blocks; \
                         PRAGMA user_version = 2;";
        ok("downgrade", conn.execute_batch(downgrade));
        row_journal(&conn, &outbox);
    }

    let store = open(&path, config(&clock));
    assert_eq!(read_outbox(&store, 5).await, outbox, "the packed journal holds every event of the rows");
    assert_eq!(read_events(&store, a.id, 2).await, events_of_a);
    assert_eq!(ok("pending_of", store.pending_of(a.id, PAGE_LEN_MAX).await), [held]);
    assert!(ok("pending_of", store.pending_of(b.id, PAGE_LEN_MAX).await).is_empty());
    ok("close", store.close().await);
    let conn = ok("open with rusqlite", rusqlite::Connection::open(&path));
    let version: i64 = ok("user_version", conn.query_row("PRAGMA user_version", [], |r| r.get(0)));
    assert_eq!(version, SCHEMA_VERSION);
    let indexes: i64 = ok("index", conn.query_row(index, [], |r| r.get(0)));
    assert_eq!(indexes, 2, "the upgrade made the indexes");
}

/// Writes the journal as versions 1 to 10 kept it, one row per entry (an event, or the debit and
/// credit events of a posting), from the events of the outbox. Only the kinds of event the
/// upgrade test writes.
fn row_journal(conn: &rusqlite::Connection, outbox: &[OutboxEntry]) {
    use bp_core::event::EventBody;
    let create = "CREATE TABLE journal (position INTEGER PRIMARY KEY, kind INTEGER NOT NULL, at INTEGER NOT NULL, \
                  transfer_id BLOB, amount_minor INTEGER, code INTEGER, a_key INTEGER NOT NULL, \
                  a_seq INTEGER NOT NULL, a_posted INTEGER NOT NULL, a_held INTEGER NOT NULL, b_key INTEGER, \
                  b_seq INTEGER, b_posted INTEGER, b_held INTEGER) STRICT";
    ok("create the row journal", conn.execute_batch(create));
    let key = |id: AccountId| -> i64 {
        ok("key", conn.query_row("SELECT key FROM accounts WHERE id = ?1", [id.as_uuid().as_bytes()], |r| r.get(0)))
    };
    let balances = |e: &Event| match &e.body {
        EventBody::AccountOpened { balances }
        | EventBody::TransferPosted { balances, .. }
        | EventBody::TransferPending { balances, .. } => (balances.posted.amount_minor(), balances.held.amount_minor()),
        other => panic!("the upgrade test writes no {other:?}"),
    };
    let mut i = 0;
    while i < outbox.len() {
        let a = &outbox[i].event;
        let b = outbox.get(i + 1).filter(|n| n.position == outbox[i].position + 1 && n.position % 2 == 1);
        let (kind, transfer, amount) = match &a.body {
            EventBody::AccountOpened { .. } => (1, None, None),
            EventBody::TransferPosted { transfer_id, amount, .. } => {
                (3, Some(*transfer_id), Some(amount.amount_minor()))
            }
            EventBody::TransferPending { transfer_id, amount, .. } => {
                (4, Some(*transfer_id), Some(amount.amount_minor()))
            }
            other => panic!("the upgrade test writes no {other:?}"),
        };
        let (a_posted, a_held) = balances(a);
        let b_cols = b.map(|b| (key(b.event.account_id), b.event.seq, balances(&b.event)));
        ok(
            "a journal row",
            conn.execute(
                "INSERT INTO journal VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                rusqlite::params![
                    i64::try_from(outbox[i].position / 2).expect("a position"),
                    kind,
                    a.at.timestamp_micros(),
                    transfer.map(|t| t.as_uuid().as_bytes().to_vec()),
                    amount,
                    key(a.account_id),
                    i64::try_from(a.seq).expect("a seq"),
                    a_posted,
                    a_held,
                    b_cols.map(|c| c.0),
                    b_cols.map(|c| i64::try_from(c.1).expect("a seq")),
                    b_cols.map(|c| c.2.0),
                    b_cols.map(|c| c.2.1),
                ],
            ),
        );
        i += 1 + usize::from(b.is_some());
    }
}

/// Writes a database with `user_version` above this build's schema version.
fn newer_database(path: &Path, wal: bool) {
    let conn = ok("create", rusqlite::Connection::open(path));
    if wal {
        let mode: String = ok("wal", conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)));
        assert_eq!(mode, "wal");
    }
    ok(
        "write",
        conn.execute_batch(&format!(
            "CREATE TABLE from_the_future (x INTEGER); INSERT INTO from_the_future VALUES (42); \
             PRAGMA user_version = {};",
            SCHEMA_VERSION + 1
        )),
    );
    ok("close", conn.close().map_err(|(_, e)| e));
}

/// A database of a newer schema is refused as incompatible, and its file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused_and_untouched() {
    for wal in [false, true] {
        let dir = ok("tempdir", tempfile::tempdir());
        let path = dir.path().join("future.db");
        newer_database(&path, wal);
        let bytes = ok("read", std::fs::read(&path));
        let clock = Arc::new(ManualClock::new(start_time()));
        match SqliteStore::open(&path, config(&clock)) {
            Err(e) => assert_eq!(e.kind(), StoreErrorKind::Incompatible, "wal {wal}: {e}"),
            Ok(_) => panic!("wal {wal}: a database of schema version {} was opened", SCHEMA_VERSION + 1),
        }
        assert!(ok("read", std::fs::read(&path)) == bytes, "wal {wal}: the refused database was modified");
        let conn = ok("reopen with rusqlite", rusqlite::Connection::open(&path));
        let mode: String = ok("mode", conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)));
        assert_eq!(mode, if wal { "wal" } else { "delete" }, "the journal mode was changed");
    }
}

/// A database whose balances do not sum to zero is refused as corrupt; put right, it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbalanced_database_is_refused() {
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("ledger.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let owner = customer(&ledger, "bob").await;
    let funded = account(&ledger, owner.id, EUR, 0).await;
    // Only opened: its row is up to date (no unindexed events that would override it).
    let idle = account(&ledger, owner.id, EUR, 0).await;
    ok("fund", ledger.transfer(deposit(&funded, 50_00)).await);
    let store = SqliteStore::clone(ledger.store());
    drop(ledger);
    ok("close", store.close().await);

    let tamper = |delta: i64| {
        let conn = ok("open with rusqlite", rusqlite::Connection::open(&path));
        let changed = ok(
            "tamper",
            conn.execute(
                "UPDATE accounts SET posted_minor = posted_minor + ?1 WHERE id = ?2",
                rusqlite::params![delta, idle.id.as_uuid().as_bytes()],
            ),
        );
        assert_eq!(changed, 1);
    };
    tamper(1);
    match SqliteStore::open(&path, config(&clock)) {
        Err(e) => assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}"),
        Ok(_) => panic!("a ledger whose balances sum to 0.01 EUR was opened"),
    }
    tamper(-1);
    let store = open(&path, config(&clock));
    let totals = ok("totals", store.totals().await);
    assert_eq!(totals.iter().map(|t| t.posted_minor).collect::<Vec<_>>(), [0]);
}

/// The file is in WAL mode, and a command is answered only once it is committed: another
/// connection sees it at once.
///
/// `synchronous = FULL` is not asserted: it is a setting of each connection, invisible from
/// another one, and no test short of a power cut (SIGKILL in `crash.rs` keeps the OS's buffers)
/// can tell it from `NORMAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_mode_and_commit_before_answer() {
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("ledger.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let conn = ok("open with rusqlite", rusqlite::Connection::open(&path));
    let mode: String = ok("journal_mode", conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)));
    assert_eq!(mode, "wal");
    let version: i64 = ok("user_version", conn.query_row("PRAGMA user_version", [], |r| r.get(0)));
    assert_eq!(version, SCHEMA_VERSION);

    let owner = customer(&ledger, "carol").await;
    let acc = account(&ledger, owner.id, EUR, 0).await;
    let count = |id: TransferId| -> i64 {
        ok(
            "count",
            conn.query_row("SELECT count(*) FROM transfers WHERE id = ?1", [id.as_uuid().as_bytes()], |r| r.get(0)),
        )
    };
    for i in 1..=20 {
        let req = deposit(&acc, i);
        assert_eq!(count(req.id), 0);
        ok("fund", ledger.transfer(req.clone()).await);
        assert_eq!(count(req.id), 1, "an answered transfer is committed");
    }
}

/// With a queue of one command, many concurrent senders wait their turn and all complete, each
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_of_one_serves_many_senders() {
    const SENDERS: usize = 200;
    const EACH: i64 = 10;
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("ledger.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    let config = SqliteConfig { queue_len_max: 1, ..config(&clock) };
    let ledger = Ledger::new(Arc::new(open(&path, config)));
    let owner = customer(&ledger, "dave").await;
    let mut accounts = Vec::new();
    for _ in 0..SENDERS {
        let acc = account(&ledger, owner.id, EUR, 0).await;
        ok("fund", ledger.transfer(deposit(&acc, 1_000_00)).await);
        accounts.push(acc);
    }
    // Sender i pays (i + 1) cents to account i + 1 (in a ring), EACH times, all at once.
    let mut set = JoinSet::new();
    for i in 0..SENDERS {
        let ledger = ledger.clone();
        let (from, to) = (accounts[i].id, accounts[(i + 1) % SENDERS].id);
        let amount_minor = i64::try_from(i + 1).unwrap_or(0);
        set.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..EACH {
                let r =
                    ok("transfer", ledger.transfer(request(TransferKind::Internal, from, to, amount_minor, EUR)).await);
                assert!(!r.replayed && r.transfer.state == TransferState::Posted);
                ids.push(r.transfer.id);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.extend(ok("sender", r));
    }
    assert_eq!(ids.len(), SENDERS * usize::try_from(EACH).unwrap_or(0));
    let store = ledger.store();
    for id in &ids {
        assert!(ok("transfer", store.transfer(*id).await).is_some());
    }
    for (i, acc) in accounts.iter().enumerate() {
        let paid = i64::try_from(i + 1).unwrap_or(0) * EACH;
        let got = i64::try_from(if i == 0 { SENDERS } else { i }).unwrap_or(0) * EACH;
        let now = ok("account", store.account(acc.id).await).expect("exists");
        assert_eq!(now.posted_minor, 1_000_00 - paid + got, "account {i}");
        assert_eq!(now.last_event_seq, 2 + 2 * u64::try_from(EACH).unwrap_or(0), "account {i}");
    }
    let totals = ok("totals", store.totals().await);
    assert_eq!(totals.iter().map(|t| t.posted_minor).collect::<Vec<_>>(), [0]);
    // Events: per account opened + deposit + 2 × EACH; funding: one per deposit.
    let expected = SENDERS * (2 + 2 * usize::try_from(EACH).unwrap_or(0)) + SENDERS;
    assert_eq!(read_outbox(&**store, PAGE_LEN_MAX).await.len(), expected);
}

/// A batch writes its new transfers' rows together. Retries of transfers the writer's cache has
/// forgotten, sent at once with new transfers, meet their ids among those rows: the batch is
/// decided again row by row, the retries replay (or conflict) and the new transfers post, each
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forgotten_retries_amid_new_transfers_replay_once() {
    const OLD: usize = 40;
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("ledger.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    // The cache forgets every transfer after each batch.
    let config = SqliteConfig { transfer_cache_len_max: 0, ..config(&clock) };
    let ledger = Ledger::new(Arc::new(open(&path, config)));
    let owner = customer(&ledger, "fay").await;
    let (a, b) = (account(&ledger, owner.id, EUR, 0).await, account(&ledger, owner.id, EUR, 0).await);
    ok("fund", ledger.transfer(deposit(&a, 1_000_00)).await);
    let mut old = Vec::new();
    for _ in 0..OLD {
        let req = request(TransferKind::Internal, a.id, b.id, 1_00, EUR);
        old.push((req.clone(), ok("old transfer", ledger.transfer(req).await).transfer));
    }
    let events_before = read_outbox(&**ledger.store(), PAGE_LEN_MAX).await.len();
    let retried_before = ledger.store().writer_stats().retried.load(std::sync::atomic::Ordering::Relaxed);

    // Retries, a retry with another amount, and as many new transfers, all at once.
    let mut set = JoinSet::new();
    for (req, original) in old.iter().cloned() {
        let new = request(TransferKind::Internal, a.id, b.id, 1_00, EUR);
        for (req, original) in [(req, Some(original)), (new, None)] {
            let ledger = ledger.clone();
            set.spawn(async move { (original, ledger.transfer(req).await) });
        }
    }
    let changed = TransferRequest { amount: Money::new(2_00, EUR), ..old[0].0.clone() };
    let conflict = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.transfer(changed).await })
    };
    let mut new_ids = Vec::new();
    while let Some(r) = set.join_next().await {
        match ok("sender", r) {
            (Some(original), answer) => {
                let again = ok("retry", answer);
                assert!(again.replayed, "a retry of {} is a replay", original.id);
                assert_eq!(again.transfer, original);
            }
            (None, answer) => {
                let new = ok("new transfer", answer);
                assert!(!new.replayed && new.transfer.state == TransferState::Posted);
                new_ids.push(new.transfer.id);
            }
        }
    }
    match ok("conflict task", conflict.await) {
        Err(Error::Ledger(LedgerError::IdempotencyConflict { .. })) => {}
        other => panic!("a retry with another amount: expected IdempotencyConflict, got {other:?}"),
    }
    let store = ledger.store();
    let retried = store.writer_stats().retried.load(std::sync::atomic::Ordering::Relaxed) - retried_before;
    assert!(retried > 0, "no batch met a forgotten id among its rows");
    new_ids.sort();
    new_ids.dedup();
    assert_eq!(new_ids.len(), OLD);
    for id in &new_ids {
        assert!(ok("new transfer", store.transfer(*id).await).is_some());
    }
    let moved = i64::try_from(2 * OLD).unwrap_or(0) * 1_00;
    let balance = |acc: &Account| {
        let store = Arc::clone(store);
        let id = acc.id;
        async move { ok("account", store.account(id).await).map(|x| x.posted_minor) }
    };
    assert_eq!((balance(&a).await, balance(&b).await), (Some(1_000_00 - moved), Some(moved)));
    assert_eq!(read_outbox(&**store, PAGE_LEN_MAX).await.len(), events_before + 2 * OLD, "two events per new transfer");
    let totals = ok("totals", store.totals().await);
    assert_eq!(totals.iter().map(|t| t.posted_minor).collect::<Vec<_>>(), [0]);
}

/// `totals()` is one consistent view even while transfers commit: polled during heavy traffic
/// it never counts a transfer on one side only. (Reading the published tails and the account
/// rows at two instants did, when an index run committed in between; many accounts with sparse
/// traffic make that likely. A race detector: it may miss a regression on one run, never
/// report a false one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totals_stay_zero_under_concurrent_writes() {
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("ledger.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    let ledger = Ledger::new(Arc::new(open(&path, config(&clock))));
    let owner = customer(&ledger, "erin").await;
    let mut accounts = Vec::new();
    for _ in 0..1500 {
        let acc = account(&ledger, owner.id, EUR, 0).await;
        ok("fund", ledger.transfer(deposit(&acc, 1_000_00)).await);
        accounts.push(acc);
    }
    let store = SqliteStore::clone(ledger.store());
    let done = Arc::new(tokio::sync::Notify::new());
    let poller = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut polls = 0u64;
            loop {
                tokio::select! {
                    () = done.notified() => return polls,
                    totals = store.totals() => {
                        let totals = ok("totals", totals);
                        assert!(
                            totals.iter().all(|t| t.posted_minor == 0),
                            "poll {polls}: totals under load do not sum to zero: {totals:?}"
                        );
                        polls += 1;
                    }
                }
            }
        })
    };
    let mut known = Known::default();
    random_traffic(&ledger, &clock, &mut known, &accounts, seed(), 64, 200).await;
    done.notify_one();
    let polls = ok("poller", poller.await);
    assert!(polls > 10, "only {polls} polls ran during the traffic");
}

/// A migration that fails says which, and why, and leaves the database at the version before.
#[tokio::test]
async fn a_failed_migration_names_its_version_and_changes_nothing() {
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("v7.db");
    let clock = Arc::new(ManualClock::new(start_time()));
    ok("close", open(&path, config(&clock)).close().await);
    {
        // Version 7 as a careless hand left it: the table of version 8 is already there.
        let conn = ok("open with rusqlite", rusqlite::Connection::open(&path));
        ok("downgrade", conn.execute_batch("DROP TABLE transients; PRAGMA user_version = 7;"));
    }
    let e = SqliteStore::open(&path, config(&clock)).expect_err("migration 8 meets its table");
    let message = e.to_string();
    assert!(message.contains("schema version 8") && message.contains("leases"), "{message}");
    let conn = ok("open with rusqlite", rusqlite::Connection::open(&path));
    let version: i64 = ok("user_version", conn.query_row("PRAGMA user_version", [], |r| r.get(0)));
    assert_eq!(version, 7, "the failed migration rolled back");
}
