//! The crash test of the SQLite store: a child process posts transfers and records each
//! acknowledged one; the test kills it with SIGKILL at random moments, many times over the same
//! database file, and after each kill reopens the store and checks that every acknowledged
//! transfer is there as acknowledged, that nothing half-written exists, and that the ledger's
//! invariants hold.
//!
//! The child is this test binary itself, run again with `--exact crash_child` and the database
//! in `BP_CRASH_CHILD_DB`; without that variable `crash_child` passes at once. It reports each
//! write on stdout, as `common/processes.rs` says.
//!
//! The kill delays and the children's seeds come from `BP_CRASH_SEED` (a fixed default when
//! unset); a failure prints the seed to replay with.

#![cfg(unix)]
// Amounts are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

#[path = "common/processes.rs"]
mod processes;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bp_core::Ledger;
use bp_core::ids::{AccountId, CustomerId};
use bp_core::testing::fixtures::ok;
use bp_storage::sqlite::{SqliteConfig, SqliteStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use processes::{Child, ChildRun, Funded, Log, Mix, SeedOnFailure, check_against_log, say, seed_from, send_from_tasks};

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

/// The accounts, their funding and the senders' mix.
const FUNDED: Funded = Funded { accounts: ACCOUNTS, fund_minor: FUND_MINOR, overdraft_minor: OVERDRAFT_MINOR };
const MIX: Mix = Mix { count: usize::MAX, amount_max_minor: AMOUNT_MAX_MINOR, pending_one_in: PENDING_ONE_IN };

// ---------------------------------------------------------------------------------------------
// The child

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
    send_from_tasks(&ledger, &accounts, TASKS, seed, MIX).await;
    panic!("the senders stopped before the kill");
}

// ---------------------------------------------------------------------------------------------
// The parent

/// Opens the customer, its accounts and their funding, in-process, before the first child.
async fn setup(path: &Path, log: &mut Log) -> CustomerId {
    let store = ok("open", SqliteStore::open(path, SqliteConfig::default()));
    let customer = FUNDED.open(&Ledger::new(Arc::new(store.clone())), "crash", log).await;
    ok("close", store.close().await);
    customer
}

/// Runs a child on `path` and kills it with SIGKILL after `kill_after`.
fn run_child(path: &Path, customer: CustomerId, seed: u64, kill_after: Duration) -> ChildRun {
    let child = Child::spawn(
        "crash_child",
        &[
            (CHILD_DB, path.display().to_string()),
            (CHILD_CUSTOMER, customer.to_string()),
            (CHILD_SEED, seed.to_string()),
        ],
    );
    // The one sleep of the test: how long the child runs is the random moment of the crash.
    std::thread::sleep(kill_after);
    child.kill()
}

/// Reopens the store after a kill and checks it against everything the children said.
async fn check(path: &Path, customer: CustomerId, log: &Log) {
    let store = ok("the store reopens after SIGKILL", SqliteStore::open(path, SqliteConfig::default()));
    check_against_log(&Arc::new(store.clone()), customer, ACCOUNTS, log).await;
    ok("close", store.close().await);
}

/// The crash test: SIGKILL a child posting transfers, many times over, and check the ledger
/// after every restart.
#[test]
fn crash_recovery() {
    if std::env::var_os(CHILD_DB).is_some() {
        return;
    }
    let seed = seed_from(SEED_ENV, SEED_DEFAULT);
    let _seed = SeedOnFailure { seed, env: SEED_ENV };
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
    assert!(log.finished() > 0, "no pending transfer was posted or voided");
}
