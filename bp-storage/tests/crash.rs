//! The crash test of the SQLite store: a child process posts transfers and records each
//! acknowledged one; the test kills it with SIGKILL at random moments, many times over the same
//! database file, and after each kill reopens the store and checks that every acknowledged
//! transfer is there as acknowledged, that nothing half-written exists, and that the ledger's
//! invariants hold.
//!
//! The child is this test binary itself, run again with `--exact crash_child` and the database
//! in `BP_CRASH_CHILD_DB`; without that variable `crash_child` passes at once. It reports on
//! stdout, one whole line per write:
//!
//! - `SEND <id> <debit> <credit> <amount_minor> <posted|pending>` before sending a transfer,
//! - `ACK <id> <debit> <credit> <amount_minor> <posted|pending>` once the store accepted it,
//! - `TRY <post|void> <id>` before posting or voiding an acknowledged pending transfer,
//! - `DONE <post|void> <id>` once the store acknowledged that.
//!
//! The kill delays and the children's seeds come from `BP_CRASH_SEED` (a fixed default when
//! unset); a failure prints the seed to replay with.

#![cfg(unix)]
// Amounts are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bp_core::account::{AccountKind, NewAccount, SystemAccount};
use bp_core::clock::{Clock, SystemClock};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::invariants::{self, Scope};
use bp_core::money::{Currency, Money};
use bp_core::store::Store;
use bp_core::testing::books::read_books;
use bp_core::testing::fixtures::{ok, person};
use bp_core::transfer::{TransferKind, TransferRequest, TransferState, VoidReason};
use bp_core::{Error, Ledger, LedgerError};
use bp_storage::sqlite::{SqliteConfig, SqliteStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

/// The database file of a child; set only in children.
const CHILD_DB: &str = "BP_CRASH_CHILD_DB";
/// The customer whose accounts a child moves money between.
const CHILD_CUSTOMER: &str = "BP_CRASH_CHILD_CUSTOMER";
/// A child's seed.
const CHILD_SEED: &str = "BP_CRASH_CHILD_SEED";
/// Replays a run.
const SEED_ENV: &str = "BP_CRASH_SEED";
const SEED_DEFAULT: u64 = 0x5EED_C4A5_2026_0003;

/// Kill-and-restart cycles on one database file.
const CYCLES: usize = 15;
/// Each check reads the whole ledger, which grows with every cycle. On a slow machine the run
/// stops starting cycles after this long, provided it has done `CYCLES_MIN`.
const CYCLES_MIN: usize = 8;
const TIME_BUDGET: Duration = Duration::from_secs(45);
/// How long a child runs before it is killed, in milliseconds.
const KILL_AFTER_MS_MIN: u64 = 50;
const KILL_AFTER_MS_MAX: u64 = 400;
/// Customer accounts the children move money between.
const ACCOUNTS: usize = 200;
/// Concurrent senders in a child.
const TASKS: u64 = 64;
/// Funding of each account, and the largest transfer, in minor units.
const FUND_MINOR: i64 = 500_00;
const AMOUNT_MAX_MINOR: i64 = 20_00;
/// Overdraft limit of every tenth account, in minor units.
const OVERDRAFT_MINOR: i64 = 50_00;
/// One transfer in this many is a pending one.
const PENDING_ONE_IN: u32 = 7;
/// Acknowledged transfers the whole run must reach, so that the test cannot pass idly.
const ACKED_MIN: usize = 300;

const EUR: Currency = Currency::EUR;

// ---------------------------------------------------------------------------------------------
// The child

/// Writes one line to stdout in a single write, under the lock, so that lines never interleave
/// and a kill cuts at most the line being written (which the parent then ignores).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    ok("write to stdout", out.write_all(&bytes).and_then(|()| out.flush()));
}

/// The child: sends transfers from many tasks until it is killed. Passes at once when not run
/// as a child by `crash_recovery`.
#[test]
fn crash_child() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let customer = ok("child customer", CustomerId::from_str(&ok("child customer", std::env::var(CHILD_CUSTOMER))));
    let seed: u64 = ok("child seed", ok("child seed", std::env::var(CHILD_SEED)).parse());
    let rt = ok("runtime", tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build());
    rt.block_on(child(PathBuf::from(db), customer, seed));
}

async fn child(path: PathBuf, customer: CustomerId, seed: u64) {
    // The test harness has written `test crash_child ... ` without a newline: end that line, so
    // that every report starts a line of its own.
    say("START");
    let store = ok("the child opens the store", SqliteStore::open(&path, SqliteConfig::default()));
    let ledger = Ledger::new(Arc::new(store));
    let accounts: Vec<AccountId> = ok("accounts", ledger.accounts_of(customer).await).iter().map(|a| a.id).collect();
    assert_eq!(accounts.len(), ACCOUNTS, "the parent opened the accounts");
    let mut senders = JoinSet::new();
    for task in 0..TASKS {
        senders.spawn(send_forever(ledger.clone(), accounts.clone(), seed.wrapping_mul(TASKS).wrapping_add(task)));
    }
    while let Some(r) = senders.join_next().await {
        ok("a sender", r);
    }
    panic!("the senders stopped before the kill");
}

async fn send_forever(ledger: Ledger<SqliteStore>, accounts: Vec<AccountId>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let [debit, credit] = common::two_accounts(&mut rng, &accounts);
        let amount = rng.random_range(1..=AMOUNT_MAX_MINOR);
        let pending = rng.random_ratio(1, PENDING_ONE_IN);
        let req = TransferRequest {
            id: TransferId::new_v7(),
            kind: TransferKind::Internal,
            debit_account: debit,
            credit_account: credit,
            amount: Money::new(amount, EUR),
            reference: None,
            hold_until: pending.then(|| SystemClock.now() + chrono::TimeDelta::hours(1)),
        };
        let how = if pending { "pending" } else { "posted" };
        let id = req.id;
        say(&format!("SEND {id} {debit} {credit} {amount} {how}"));
        match ledger.transfer(req).await {
            Ok(r) => {
                assert!(!r.replayed, "a new transfer was answered as a replay");
                say(&format!("ACK {id} {debit} {credit} {amount} {how}"));
            }
            Err(Error::Ledger(LedgerError::InsufficientFunds { .. })) => continue,
            Err(e) => panic!("transfer {id}: {e:?}"),
        }
        if pending {
            let finish = match rng.random_range(0..3) {
                0 => "post",
                1 => "void",
                _ => continue,
            };
            say(&format!("TRY {finish} {id}"));
            let r = if finish == "post" {
                ledger.post_pending(id).await
            } else {
                ledger.void_pending(id, VoidReason::Cancelled).await
            };
            ok(&format!("{finish} {id}"), r);
            say(&format!("DONE {finish} {id}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent

/// Prints the seed if a panic unwinds through the test.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("crash test failed with seed {0}; replay with {SEED_ENV}={0}", self.0);
        }
    }
}

/// What the children said about one transfer.
#[derive(Clone, Debug)]
struct Sent {
    debit: AccountId,
    credit: AccountId,
    amount_minor: i64,
    pending: bool,
    acked: bool,
    /// A post or void that was tried, and whether it was acknowledged.
    finish: Option<(TransferState, bool)>,
}

/// Everything every child said, over all cycles.
#[derive(Debug, Default)]
struct Log {
    transfers: HashMap<TransferId, Sent>,
    acked: usize,
}

fn parse<T: FromStr>(line: &str, word: Option<&str>) -> T
where
    T::Err: std::fmt::Debug,
{
    ok(&format!("line `{line}`"), word.unwrap_or_default().parse())
}

impl Log {
    fn record(&mut self, line: &str) {
        let mut words = line.split(' ');
        match words.next() {
            Some(tag @ ("SEND" | "ACK")) => {
                let id: TransferId = parse(line, words.next());
                let sent = Sent {
                    debit: parse(line, words.next()),
                    credit: parse(line, words.next()),
                    amount_minor: parse(line, words.next()),
                    pending: words.next() == Some("pending"),
                    acked: tag == "ACK",
                    finish: None,
                };
                if tag == "SEND" {
                    assert!(self.transfers.insert(id, sent).is_none(), "transfer id {id} sent twice");
                } else {
                    let before = self.transfers.get_mut(&id).unwrap_or_else(|| panic!("ACK before SEND: {line}"));
                    assert!(!before.acked, "transfer {id} acknowledged twice");
                    assert!(
                        (before.debit, before.credit, before.amount_minor, before.pending)
                            == (sent.debit, sent.credit, sent.amount_minor, sent.pending),
                        "ACK differs from SEND: {line}"
                    );
                    before.acked = true;
                    self.acked += 1;
                }
            }
            Some(tag @ ("TRY" | "DONE")) => {
                let state = match words.next() {
                    Some("post") => TransferState::Posted,
                    Some("void") => TransferState::Voided,
                    _ => panic!("bad line `{line}`"),
                };
                let id: TransferId = parse(line, words.next());
                let sent =
                    self.transfers.get_mut(&id).unwrap_or_else(|| panic!("{tag} of an unknown transfer: {line}"));
                assert!(sent.pending && sent.acked, "{tag} of a transfer not acknowledged pending: {line}");
                sent.finish = Some((state, tag == "DONE"));
            }
            _ => {}
        }
    }

    /// The states `id` may be in after a crash, given what was acknowledged.
    fn allowed(sent: &Sent) -> Vec<TransferState> {
        match (sent.pending, sent.finish) {
            (false, _) => vec![TransferState::Posted],
            (true, None) => vec![TransferState::Pending],
            (true, Some((state, true))) => vec![state],
            (true, Some((state, false))) => vec![TransferState::Pending, state],
        }
    }
}

/// Opens the customer, its accounts and their funding, in-process, before the first child.
async fn setup(path: &Path, log: &mut Log) -> CustomerId {
    let store = ok("open", SqliteStore::open(path, SqliteConfig::default()));
    let ledger = Ledger::new(Arc::new(store.clone()));
    let customer = ok("customer", ledger.open_customer(person("crash")).await);
    for i in 0..ACCOUNTS {
        let account = ok(
            "account",
            ledger
                .open_account(NewAccount {
                    id: AccountId::new_v7(),
                    customer_id: customer.id,
                    kind: AccountKind::Current,
                    currency: EUR,
                    overdraft_limit_minor: if i % 10 == 0 { OVERDRAFT_MINOR } else { 0 },
                })
                .await,
        );
        let id = TransferId::new_v7();
        ok("fund", ledger.fund(id, account.id, Money::new(FUND_MINOR, EUR)).await);
        let funding = SystemAccount::Funding.id(EUR);
        log.record(&format!("SEND {id} {funding} {} {FUND_MINOR} posted", account.id));
        log.record(&format!("ACK {id} {funding} {} {FUND_MINOR} posted", account.id));
    }
    drop(ledger);
    ok("close", store.close().await);
    customer.id
}

/// What a killed child left: its complete stdout lines, its stderr, and how it ended.
struct ChildRun {
    lines: Vec<String>,
    stderr: String,
    killed: bool,
}

/// Runs a child on `path` and kills it with SIGKILL after `kill_after`.
fn run_child(path: &Path, customer: CustomerId, seed: u64, kill_after: Duration) -> ChildRun {
    let exe = ok("current_exe", std::env::current_exe());
    let mut child = ok(
        "spawn the child",
        Command::new(exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB, path)
            .env(CHILD_CUSTOMER, customer.to_string())
            .env(CHILD_SEED, seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
    );
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                // A line cut by the kill has no newline: it was never complete, so it is dropped.
                Ok(0) => return lines,
                Ok(_) if buf.ends_with(b"\n") => {
                    lines.push(String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned())
                }
                Ok(_) => {}
                Err(e) => panic!("reading the child's stdout: {e}"),
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The one sleep of the test: how long the child runs is the random moment of the crash.
    std::thread::sleep(kill_after);
    // SIGKILL on Unix. The child may have died already (a failure, reported below).
    let _ = child.kill();
    let status = ok("wait for the child", child.wait());
    ChildRun {
        lines: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        killed: status.signal() == Some(9),
    }
}

/// Reopens the store after a kill and checks the ledger's invariants (`invariants::check` on the
/// books read back), then everything the children said against it.
async fn check(path: &Path, customer: CustomerId, log: &Log) {
    let store = ok("the store reopens after SIGKILL", SqliteStore::open(path, SqliteConfig::default()));
    let mut accounts: Vec<AccountId> =
        ok("accounts_of", store.accounts_of(customer).await).iter().map(|a| a.id).collect();
    assert_eq!(accounts.len(), ACCOUNTS);
    accounts.push(SystemAccount::Funding.id(EUR));
    // The interbank clearing account is open from the start (empty here).
    accounts.push(SystemAccount::InterbankClearing.id(EUR));
    let mut books = read_books(&store, &accounts, Scope::Ledger).await;
    assert_eq!(books.accounts.len(), ACCOUNTS + 2, "the funding and clearing accounts exist");
    // One currency, summing to zero over exactly these accounts.
    let totals = books.totals.clone().unwrap_or_default();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!((totals[0].currency, totals[0].posted_minor), (EUR, 0), "{totals:?}");
    assert_eq!(totals[0].accounts, u64::try_from(ACCOUNTS + 2).unwrap_or(0), "{totals:?}");

    // Every transfer any child sent, read concurrently: the ledger's transfers are those found.
    let ids: Vec<TransferId> = log.transfers.keys().copied().collect();
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(64) {
        let mut set = JoinSet::new();
        for id in chunk {
            let (store, id) = (store.clone(), *id);
            set.spawn(async move { (id, ok("transfer", store.transfer(id).await)) });
        }
        while let Some(r) = set.join_next().await {
            found.push(ok("lookup", r));
        }
    }
    books.transfers = Some(found.iter().filter_map(|(_, t)| t.clone()).collect());
    if let Err(violation) = invariants::check(&books) {
        panic!("the ledger after the crash: {violation}");
    }

    // What the store holds against what the children said: every transfer the store knows was
    // sent; every acknowledged one is there as acknowledged, in a state the log allows.
    let mut with_lines: HashSet<TransferId> = HashSet::new();
    let mut in_events: HashSet<TransferId> = HashSet::new();
    for h in books.accounts.iter().filter_map(|a| a.history.as_ref()) {
        with_lines.extend(h.postings.iter().map(|p| p.transfer_id));
        in_events.extend(h.events.iter().filter_map(|e| e.body.transfer_id()));
    }
    for id in with_lines.iter().chain(&in_events) {
        assert!(log.transfers.contains_key(id), "the store has transfer {id}, which nobody sent");
    }
    for (id, t) in found {
        let sent = &log.transfers[&id];
        let Some(t) = t else {
            assert!(!sent.acked, "acknowledged transfer {id} is missing after the crash");
            assert!(!with_lines.contains(&id) && !in_events.contains(&id), "missing transfer {id} has lines or events");
            continue;
        };
        assert_eq!(
            (t.debit_account, t.credit_account, t.amount, t.hold_until.is_some()),
            (sent.debit, sent.credit, Money::new(sent.amount_minor, EUR), sent.pending),
            "transfer {id} is not as sent"
        );
        let allowed = Log::allowed(sent);
        assert!(allowed.contains(&t.state), "transfer {id} is {:?}, expected one of {allowed:?}", t.state);
    }
    ok("close", store.close().await);
}

/// The crash test: SIGKILL a child posting transfers, many times over, and check the ledger
/// after every restart.
#[test]
fn crash_recovery() {
    if std::env::var_os(CHILD_DB).is_some() {
        return;
    }
    let seed = std::env::var(SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(SEED_DEFAULT);
    let _seed = SeedOnFailure(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = ok("runtime", tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build());
    let dir = ok("tempdir", tempfile::tempdir());
    let path = dir.path().join("crash.db");
    let mut log = Log::default();
    let customer = rt.block_on(setup(&path, &mut log));
    let started = Instant::now();
    let mut cycles = 0;
    for cycle in 0..CYCLES {
        if cycle >= CYCLES_MIN && started.elapsed() > TIME_BUDGET {
            eprintln!("time budget spent: stopping after {cycle} cycles");
            break;
        }
        cycles += 1;
        let kill_after = Duration::from_millis(rng.random_range(KILL_AFTER_MS_MIN..=KILL_AFTER_MS_MAX));
        let run = run_child(&path, customer, rng.random(), kill_after);
        assert!(run.killed, "cycle {cycle}: the child ended before the kill; its stderr:\n{}", run.stderr);
        let acked_before = log.acked;
        for line in &run.lines {
            log.record(line);
        }
        let check_start = Instant::now();
        rt.block_on(check(&path, customer, &log));
        eprintln!(
            "cycle {cycle}: killed after {kill_after:?}, {} acknowledged ({} in all, {} sent), checked in {:?}",
            log.acked - acked_before,
            log.acked,
            log.transfers.len(),
            check_start.elapsed()
        );
    }
    eprintln!("{cycles} cycles in {:?}", started.elapsed());
    let setup_acked = ACCOUNTS;
    assert!(
        log.acked - setup_acked >= ACKED_MIN,
        "the children acknowledged only {} transfers: the test exercised too little",
        log.acked - setup_acked
    );
    let finished = log.transfers.values().filter(|s| matches!(s.finish, Some((_, true)))).count();
    assert!(finished > 0, "no pending transfer was posted or voided");
}
