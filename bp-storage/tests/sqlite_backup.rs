//! Online backups of the SQLite store (`bp_storage::sqlite::backup`) taken under load: while
//! eight tasks commit transfers (posted, and pending ones later posted or voided) in two
//! currencies, several backups are taken; each must open as a store (recovery, and its refusal
//! of a ledger whose currencies do not sum to zero), pass `invariants::check` over every
//! account, transfer and event it holds, and hold every transfer, post and void that was
//! acknowledged before the backup began. Also: a backup never overwrites a file, and refuses a
//! source that is not a bp database.

// Amounts are written as major_minor units: `500_00` is 500.00.
#![allow(clippy::inconsistent_digit_grouping)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bp_core::account::{AccountKind, NewAccount, SystemAccount};
use bp_core::clock::{Clock as _, SystemClock};
use bp_core::ids::{AccountId, TransferId};
use bp_core::invariants::{self, Scope};
use bp_core::money::{Currency, Money};
use bp_core::store::Store;
use bp_core::testing::books::read_books;
use bp_core::testing::fixtures::{ok, person};
use bp_core::transfer::{TransferKind, TransferRequest, TransferState, VoidReason};
use bp_core::{Error, Ledger, LedgerError, StoreErrorKind};
use bp_storage::sqlite::{SCHEMA_VERSION, SqliteConfig, SqliteStore, backup};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

const CURRENCIES: [Currency; 2] = [Currency::EUR, Currency::USD];
/// Customer accounts per currency.
const ACCOUNTS_PER_CURRENCY: usize = 6;
const FUND_MINOR: i64 = 1_000_000_00;
const AMOUNT_MAX_MINOR: i64 = 500_00;
/// One transfer in this many is made pending (a hold), then posted, voided or left pending.
const PENDING_ONE_IN: u32 = 4;
const SENDERS: u64 = 8;
/// Transfers acknowledged before the first backup, so that it copies more than an empty ledger.
const WARM_UP_ACKS: u64 = 1_500;
const BACKUPS: usize = 4;
/// Acknowledgements between two backups.
const ACKS_BETWEEN_BACKUPS: u64 = 300;
/// The seed of the random traffic unless `BP_SQLITE_TEST_SEED` gives another.
const SEED_DEFAULT: u64 = 0x5EED_BAC0_2026_0018;

/// What the senders were told of one transfer; ticks order acknowledgements against the start
/// of each backup.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    acked_tick: Option<u64>,
    /// The post or void acknowledged, and when.
    finished: Option<(TransferState, u64)>,
}

#[derive(Debug, Default)]
struct Log {
    sent: Mutex<HashMap<TransferId, Sent>>,
    /// Taken after each acknowledgement returned: a tick below a backup's starting tick was
    /// acknowledged before that backup began.
    tick: AtomicU64,
}

impl Log {
    fn acked(&self, id: TransferId) {
        let tick = self.tick.fetch_add(1, Ordering::SeqCst);
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().acked_tick = Some(tick);
    }

    fn finished(&self, id: TransferId, state: TransferState) {
        let tick = self.tick.fetch_add(1, Ordering::SeqCst);
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().finished = Some((state, tick));
    }

    fn snapshot(&self) -> HashMap<TransferId, Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_taken_under_load_restore_to_a_ledger_whose_invariants_hold() {
    let seed = std::env::var("BP_SQLITE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED_DEFAULT);
    eprintln!("random traffic from seed {seed} (replay with BP_SQLITE_TEST_SEED={seed})");
    let dir = ok("temp dir", tempfile::tempdir());
    let live = ok("open", SqliteStore::open(dir.path().join("live.db"), SqliteConfig::default()));
    let ledger = Ledger::new(Arc::new(live.clone()));
    let customer = ok("customer", ledger.open_customer(person("backup")).await);
    let log = Arc::new(Log::default());
    let mut by_currency: Vec<Vec<AccountId>> = Vec::new();
    for currency in CURRENCIES {
        let mut ids = Vec::new();
        for _ in 0..ACCOUNTS_PER_CURRENCY {
            let request = NewAccount {
                id: AccountId::new_v7(),
                customer_id: customer.id,
                kind: AccountKind::Current,
                currency,
                overdraft_limit_minor: 0,
            };
            let account = ok("account", ledger.open_account(request).await);
            let id = TransferId::new_v7();
            ok("fund", ledger.fund(id, account.id, Money::new(FUND_MINOR, currency)).await);
            log.acked(id);
            ids.push(account.id);
        }
        by_currency.push(ids);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = JoinSet::new();
    for task in 0..SENDERS {
        let (ledger, log, stop) = (ledger.clone(), Arc::clone(&log), Arc::clone(&stop));
        let accounts = by_currency.clone();
        senders.spawn(send_until_stopped(ledger, accounts, log, stop, seed.wrapping_add(task)));
    }

    wait_for_acks(&log, WARM_UP_ACKS).await;
    let mut backups = Vec::new();
    let mut acks_during_backups = 0;
    for n in 0..BACKUPS {
        let path = dir.path().join(format!("backup-{n}.db"));
        let started_tick = log.tick.load(Ordering::SeqCst);
        let (source, destination) = (live.path().to_owned(), path.clone());
        let report = ok("backup", ok("join", tokio::task::spawn_blocking(move || backup(source, destination)).await));
        let ended_tick = log.tick.load(Ordering::SeqCst);
        assert_eq!(report.path, path);
        assert_eq!(report.schema_version, SCHEMA_VERSION);
        assert!(report.bytes > 0 && report.bytes == ok("size", std::fs::metadata(&path)).len());
        assert!(!dir.path().join(format!("backup-{n}.db.partial")).exists(), "the partial file was renamed");
        acks_during_backups += ended_tick - started_tick;
        eprintln!("backup {n}: {} bytes, {} acknowledgements while it ran", report.bytes, ended_tick - started_tick);
        backups.push((path, started_tick));
        wait_for_acks(&log, ended_tick + ACKS_BETWEEN_BACKUPS).await;
    }
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = senders.join_next().await {
        ok("a sender", r);
    }
    // The load really ran across the backups: transfers were being committed while they copied.
    assert!(acks_during_backups > 0, "no transfer was acknowledged while a backup ran: the test proves nothing");

    let sent = log.snapshot();
    let mut accounts: Vec<AccountId> = by_currency.concat();
    accounts.extend(CURRENCIES.map(|c| SystemAccount::Funding.id(c)));
    accounts.extend(bp_core::external::rail::clearing_accounts().into_iter().map(|(system, c)| system.id(c)));
    for (path, started_tick) in &backups {
        check_restored(path, &accounts, &sent, *started_tick).await;
    }
    // And the live store, which went on after the last backup.
    check_books(&live, &accounts, &sent, "the live store").await;
    ok("close", live.close().await);
}

#[tokio::test]
async fn a_backup_never_overwrites_and_refuses_what_is_not_a_bp_database() {
    let dir = ok("temp dir", tempfile::tempdir());
    let store = ok("open", SqliteStore::open(dir.path().join("live.db"), SqliteConfig::default()));
    let taken = dir.path().join("taken.db");
    ok("write", std::fs::write(&taken, b"an operator's file"));
    let e = backup(store.path(), &taken).expect_err("an existing destination is refused");
    assert_eq!(e.kind(), StoreErrorKind::Conflict, "{e}");
    assert_eq!(ok("read", std::fs::read(&taken)), b"an operator's file", "the existing file is untouched");

    let empty = dir.path().join("empty.db");
    // SQLite reads a file of zero bytes as an empty database, of schema version 0.
    ok("an empty database", std::fs::write(&empty, b""));
    let e = backup(&empty, dir.path().join("copy.db")).expect_err("a database of schema 0 is refused");
    assert_eq!(e.kind(), StoreErrorKind::InvalidRequest, "{e}");
    assert!(!dir.path().join("copy.db").exists() && !dir.path().join("copy.db.partial").exists());

    let e = backup(dir.path().join("missing.db"), dir.path().join("copy.db")).expect_err("a missing source");
    assert!(!dir.path().join("missing.db").exists(), "a missing source is not created: {e}");
    ok("close", store.close().await);
}

/// Opens the backup at `path` as a store and checks it: the books, and every transfer, post and
/// void acknowledged before `started_tick` is in it as acknowledged.
async fn check_restored(path: &Path, accounts: &[AccountId], sent: &HashMap<TransferId, Sent>, started_tick: u64) {
    let what = format!("the backup {}", path.display());
    let store = SqliteStore::open(path, SqliteConfig::default()).unwrap_or_else(|e| panic!("{what} opens: {e}"));
    let found = check_books(&store, accounts, sent, &what).await;
    for (id, s) in sent {
        if s.acked_tick.is_some_and(|t| t < started_tick) {
            let Some(state) = found.get(id) else {
                panic!("{what}: transfer {id}, acknowledged before it, is missing")
            };
            if let Some((finished, tick)) = s.finished.filter(|(_, tick)| *tick < started_tick) {
                assert_eq!(*state, finished, "{what}: transfer {id} was {finished:?} (tick {tick}) before it");
            }
        }
    }
    ok("close", store.close().await);
}

/// Reads the books of `store` (every account, and every transfer the senders made that it
/// has), checks them with `invariants::check` over the whole ledger, and returns the state of
/// each transfer found.
async fn check_books(
    store: &SqliteStore,
    accounts: &[AccountId],
    sent: &HashMap<TransferId, Sent>,
    what: &str,
) -> HashMap<TransferId, TransferState> {
    let mut books = read_books(store, accounts, Scope::Ledger).await;
    assert_eq!(books.accounts.len(), accounts.len(), "{what}: every account is there");
    let mut transfers = Vec::new();
    for id in sent.keys() {
        if let Some(t) = ok("transfer", store.transfer(*id).await) {
            transfers.push(t);
        }
    }
    let found = transfers.iter().map(|t| (t.id, t.state)).collect();
    books.transfers = Some(transfers);
    if let Err(violation) = invariants::check(&books) {
        panic!("{what}: {violation}");
    }
    found
}

async fn wait_for_acks(log: &Log, tick: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while log.tick.load(Ordering::SeqCst) < tick {
        assert!(tokio::time::Instant::now() < deadline, "the senders did not reach {tick} acknowledgements in 120 s");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn send_until_stopped(
    ledger: Ledger<SqliteStore>,
    by_currency: Vec<Vec<AccountId>>,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        let c = rng.random_range(0..CURRENCIES.len());
        let [debit, credit] = common::two_accounts(&mut rng, &by_currency[c]);
        let pending = rng.random_ratio(1, PENDING_ONE_IN);
        let request = TransferRequest {
            id: TransferId::new_v7(),
            kind: TransferKind::Internal,
            debit_account: debit,
            credit_account: credit,
            amount: Money::new(rng.random_range(1..=AMOUNT_MAX_MINOR), CURRENCIES[c]),
            reference: None,
            hold_until: pending.then(|| SystemClock.now() + chrono::TimeDelta::hours(1)),
        };
        let id = request.id;
        log.sent.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default();
        match ledger.transfer(request).await {
            Ok(_) => log.acked(id),
            Err(Error::Ledger(LedgerError::InsufficientFunds { .. })) => continue,
            Err(e) => panic!("transfer {id}: {e:?}"),
        }
        if pending {
            match rng.random_range(0..3) {
                0 => {
                    ok("post", ledger.post_pending(id).await);
                    log.finished(id, TransferState::Posted);
                }
                1 => {
                    ok("void", ledger.void_pending(id, VoidReason::Cancelled).await);
                    log.finished(id, TransferState::Voided);
                }
                _ => {}
            }
        }
    }
}
