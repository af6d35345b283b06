//! The MongoDB store with several writer processes on one database, on the real server that
//! `BP_MONGODB_URI` names (scripts/test.sh starts FerretDB and sets it). Both tests are
//! `#[ignore]`d, so a plain `cargo test` skips them, and fail naming the variable when it is
//! unset:
//!
//! ```text
//! BP_MONGODB_URI=mongodb://127.0.0.1:PORT/ cargo test -p bp-storage --features mongodb \
//!     --test mongodb_processes -- --ignored --nocapture
//! ```
//!
//! - `writer_processes_race`: three processes, each its own store instance, send transfers at
//!   once between the same few accounts, and the same funding transfers (same ids) from all
//!   three at once. Checked against the single-threaded model: every acknowledged transfer is
//!   there exactly once and every refused one is not; each shared id moved money once and every
//!   process got the same transfer for it; the balances are the model's replayed in commit
//!   order; each currency sums to zero; each account's events are numbered without gaps; and
//!   two fresh store instances, and every writer's own replica, see the events in one order.
//! - `writer_processes_killed`: three writer processes send transfers (some pending, then
//!   posted or voided) until one of them, chosen at random at a random moment, is killed with
//!   SIGKILL and replaced by a new process; over and over. The survivors must go on committing
//!   after each kill, and each new process must commit. Then all are killed at once, and a
//!   fresh store must hold every acknowledged transfer as acknowledged, nothing partial, and
//!   the ledger's invariants.
//!
//! The children are this test binary run again (`--exact race_child` or `crash_child`), told
//! by variables, which only children have, where to write; they report on stdout as
//! `common/processes.rs` says. Seeds come from `BP_MONGODB_PROCESSES_SEED` (a fixed default
//! when unset); a failure prints the seed to replay with.

#![cfg(unix)]
// Amounts are written as major_minor units: `100_00` is 100.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

#[path = "common/processes.rs"]
mod processes;
#[path = "common/mongodb.rs"]
mod server;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bp_core::Ledger;
use bp_core::account::SystemAccount;
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::money::Money;
use bp_core::store::{OutboxEntry, PAGE_LEN_MAX, Store};
use bp_core::testing::books::read_outbox;
use bp_core::testing::fixtures::ok;
use bp_core::testing::model::replay_in_commit_order;
use bp_core::transfer::{Transfer, TransferState};
use bp_storage::mongodb::{MongoConfig, MongoStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use processes::{Child, EUR, Funded, Log, Mix, SeedOnFailure, check_against_log, say, seed_from, send_from_tasks};
use server::{database, uri};

/// The database of a child; set only in children (which inherit `BP_MONGODB_URI`).
const CHILD_DB: &str = "BP_MONGODB_CHILD_DB";
/// The customer whose accounts a child moves money between.
const CHILD_CUSTOMER: &str = "BP_MONGODB_CHILD_CUSTOMER";
/// A child's seed.
const CHILD_SEED: &str = "BP_MONGODB_CHILD_SEED";
/// The funding transfers every racing child sends: `id:account:amount_minor`, comma-separated.
const CHILD_SHARED: &str = "BP_MONGODB_CHILD_SHARED";
/// Replays a run.
const SEED_ENV: &str = "BP_MONGODB_PROCESSES_SEED";
const SEED_DEFAULT: u64 = 0x5EED_3060_2026_0017;

/// Writer processes at once.
const WRITERS: usize = 3;
/// Customer accounts: few, so that the writers' transfers meet on the same accounts.
const ACCOUNTS: usize = 40;
const FUNDED: Funded = Funded { accounts: ACCOUNTS, fund_minor: 200_00, overdraft_minor: 50_00 };
/// Concurrent senders in each child.
const TASKS: u64 = 16;

/// The race: transfers per sender, large enough that some meet empty accounts.
const RACE_MIX: Mix = Mix { count: 30, amount_max_minor: 60_00, pending_one_in: 0 };
/// Funding transfers every racing child sends with the same ids, and the tasks sending them.
const SHARED: usize = 60;
const SHARED_TASKS: usize = 4;
const SHARED_AMOUNT_MAX_MINOR: i64 = 30_00;
/// How long a racing child may take.
const RACE_TIMEOUT: Duration = Duration::from_secs(120);

/// The crash test: senders' mix, kills, and how long a kill waits.
const CRASH_MIX: Mix = Mix { count: usize::MAX, amount_max_minor: 20_00, pending_one_in: 7 };
const KILLS: usize = 8;
const KILL_AFTER_MS_MIN: u64 = 300;
const KILL_AFTER_MS_MAX: u64 = 1_500;
/// How long the survivors (and a new process) have to commit after a kill before the test fails.
const GO_ON_TIMEOUT: Duration = Duration::from_secs(30);
/// Acknowledged transfers the children of a test must reach, so that it cannot pass idly.
const ACKED_MIN: usize = 300;

/// Held by each test while it runs: the two would otherwise run at once (the harness runs
/// tests in parallel), six writer processes on two cores, and a new writer could then take
/// longer than `GO_ON_TIMEOUT` to read the log.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What each test starts with: its database, its turn, its seed and generator, a runtime, the
/// time it started, and an empty log.
struct Run {
    name: String,
    _turn: std::sync::MutexGuard<'static, ()>,
    _seed: SeedOnFailure,
    rng: StdRng,
    rt: tokio::runtime::Runtime,
    started: Instant,
    log: Log,
}

impl Run {
    fn start(label: &str) -> Self {
        let name = database(label);
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seed = seed_from(SEED_ENV, SEED_DEFAULT);
        let rng = StdRng::seed_from_u64(seed);
        let (rt, started) = (runtime(), Instant::now());
        Self { name, _turn, _seed: SeedOnFailure { seed, env: SEED_ENV }, rng, rt, started, log: Log::default() }
    }
}

async fn connect(name: &str) -> Arc<MongoStore> {
    let store = MongoStore::connect(&uri(), name, MongoConfig::default())
        .await
        .unwrap_or_else(|e| panic!("cannot open a MongoDB store in {name} at BP_MONGODB_URI: {e}"));
    Arc::new(store)
}

fn runtime() -> tokio::runtime::Runtime {
    ok("runtime", tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build())
}

/// The child's settings, when this process is a child.
struct ChildEnv {
    db: String,
    customer: CustomerId,
    seed: u64,
}

fn child_env() -> Option<ChildEnv> {
    let db = std::env::var(CHILD_DB).ok()?;
    let customer = ok("child customer", CustomerId::from_str(&ok("child customer", std::env::var(CHILD_CUSTOMER))));
    let seed = ok("child seed", ok("child seed", std::env::var(CHILD_SEED)).parse());
    Some(ChildEnv { db, customer, seed })
}

/// Opens the child's store and reads its customer's accounts. Says `START` first: the test
/// harness has written `test NAME ... ` without a newline, so every report then starts a line.
async fn open_child(env: &ChildEnv) -> (Arc<MongoStore>, Ledger<MongoStore>, Vec<AccountId>) {
    say("START");
    let store = connect(&env.db).await;
    let ledger = Ledger::new(Arc::clone(&store));
    let accounts: Vec<AccountId> =
        ok("accounts", ledger.accounts_of(env.customer).await).iter().map(|a| a.id).collect();
    assert_eq!(accounts.len(), ACCOUNTS, "the parent opened the accounts");
    (store, ledger, accounts)
}

fn children_env(db: &str, customer: CustomerId, seed: u64) -> Vec<(&'static str, String)> {
    vec![(CHILD_DB, db.to_owned()), (CHILD_CUSTOMER, customer.to_string()), (CHILD_SEED, seed.to_string())]
}

/// Waits until `done` holds, panicking with `what` after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The race

/// A funding transfer every racing child sends.
#[derive(Clone, Copy, Debug)]
struct Shared {
    id: TransferId,
    account: AccountId,
    amount_minor: i64,
}

fn shared_to_env(shared: &[Shared]) -> String {
    shared.iter().map(|s| format!("{}:{}:{}", s.id, s.account, s.amount_minor)).collect::<Vec<_>>().join(",")
}

fn shared_from_env(text: &str) -> Vec<Shared> {
    text.split(',')
        .map(|s| {
            let mut parts = s.split(':');
            let mut next = || parts.next().unwrap_or_default();
            Shared {
                id: ok("shared id", next().parse()),
                account: ok("shared account", next().parse()),
                amount_minor: ok("shared amount", next().parse()),
            }
        })
        .collect()
}

/// A 64-bit FNV-1a digest of the outbox's event ids in order: what a child reports of its replica.
fn digest(outbox: &[OutboxEntry]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for entry in outbox {
        for b in entry.event.id().to_string().bytes().chain([b',']) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A racing child: opens its store, says `READY`, waits for `GO` on stdin, then sends its
/// random transfers and the shared fundings at once. Reports each shared answer as
/// `SHARED <id> <replayed> <transfer as JSON>`, then `OUTBOX <len> <digest>` of its replica's
/// outbox and `STATS <batches> <races lost>`. Passes at once when not run as a child.
#[test]
fn race_child() {
    let Some(env) = child_env() else { return };
    let shared = shared_from_env(&ok("shared transfers", std::env::var(CHILD_SHARED)));
    runtime().block_on(async {
        let (store, ledger, accounts) = open_child(&env).await;
        say("READY");
        let mut go = String::new();
        ok("read GO", std::io::stdin().read_line(&mut go));
        assert_eq!(go.trim(), "GO");
        let mut senders = tokio::task::JoinSet::new();
        for task in 0..SHARED_TASKS {
            let ledger = ledger.clone();
            let mine: Vec<Shared> = shared.iter().copied().skip(task).step_by(SHARED_TASKS).collect();
            senders.spawn(async move {
                for s in mine {
                    let r = ok("shared funding", ledger.fund(s.id, s.account, Money::new(s.amount_minor, EUR)).await);
                    say(&format!("SHARED {} {} {}", s.id, r.replayed, ok("JSON", serde_json::to_string(&r.transfer))));
                }
            });
        }
        send_from_tasks(&ledger, &accounts, TASKS, env.seed, RACE_MIX).await;
        while let Some(r) = senders.join_next().await {
            ok("a shared sender", r);
        }
        let outbox = read_outbox(store.as_ref(), PAGE_LEN_MAX).await;
        say(&format!("OUTBOX {} {}", outbox.len(), digest(&outbox)));
        say(&format!("STATS {} {}", store.stats().batches(), store.stats().races_lost()));
    });
}

/// What the racing children said besides the log's lines.
#[derive(Default)]
struct RaceReports {
    /// Per shared id: (replayed, the transfer as JSON), one per child.
    shared: HashMap<TransferId, Vec<(bool, String)>>,
    /// Per child: its replica's outbox length and digest.
    outboxes: Vec<(usize, u64)>,
    races_lost: u64,
}

impl RaceReports {
    fn record(&mut self, line: &str) {
        let mut words = line.splitn(4, ' ');
        match words.next() {
            Some("SHARED") => {
                let id = ok("shared id", words.next().unwrap_or_default().parse());
                let replayed = ok("replayed", words.next().unwrap_or_default().parse());
                self.shared.entry(id).or_default().push((replayed, words.next().unwrap_or_default().to_owned()));
            }
            Some("OUTBOX") => {
                let len = ok("outbox length", words.next().unwrap_or_default().parse());
                self.outboxes.push((len, ok("outbox digest", words.next().unwrap_or_default().parse())));
            }
            Some("STATS") => {
                let _batches = words.next();
                self.races_lost += ok::<u64, _>("races lost", words.next().unwrap_or_default().parse());
            }
            _ => {}
        }
    }

    /// Each shared funding moved money once, and every child got the same transfer for it.
    /// Records each in `log` as acknowledged.
    fn check_shared(&self, shared: &[Shared], log: &mut Log) {
        for s in shared {
            let answers = self.shared.get(&s.id).map(Vec::as_slice).unwrap_or_default();
            assert_eq!(answers.len(), WRITERS, "shared funding {}: one answer per child", s.id);
            assert_eq!(answers.iter().filter(|(replayed, _)| !replayed).count(), 1, "shared {} applied once", s.id);
            assert!(answers.iter().all(|a| a.1 == answers[0].1), "shared {}: the children's answers differ", s.id);
            let t: Transfer = ok("shared transfer", serde_json::from_str(&answers[0].1));
            assert_eq!((t.credit_account, t.amount), (s.account, Money::new(s.amount_minor, EUR)));
            log.record_acked(s.id, SystemAccount::Funding.id(EUR), s.account, s.amount_minor);
        }
    }
}

/// Three writer processes at once on one database, checked against the single-threaded model.
#[test]
#[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]
fn writer_processes_race() {
    let Run { name, _turn, _seed, mut rng, rt, started, mut log } = Run::start("race");
    let (customer, accounts) = rt.block_on(async {
        let store = connect(&name).await;
        let customer = FUNDED.open(&Ledger::new(Arc::clone(&store)), "race", &mut log).await;
        let accounts: Vec<AccountId> = ok("accounts", store.accounts_of(customer).await).iter().map(|a| a.id).collect();
        (customer, accounts)
    });
    let shared: Vec<Shared> = (0..SHARED)
        .map(|_| Shared {
            id: TransferId::new_v7(),
            account: accounts[rng.random_range(0..accounts.len())],
            amount_minor: rng.random_range(1..=SHARED_AMOUNT_MAX_MINOR),
        })
        .collect();
    let mut children: Vec<Child> = (0..WRITERS)
        .map(|_| {
            let mut env = children_env(&name, customer, rng.random());
            env.push((CHILD_SHARED, shared_to_env(&shared)));
            Child::spawn("race_child", &env)
        })
        .collect();
    wait_for("the children open the store", RACE_TIMEOUT, || children.iter().all(|c| c.count("READY") == 1));
    let race_started = Instant::now();
    for child in &mut children {
        child.tell("GO");
    }
    let mut reports = RaceReports::default();
    for child in children {
        let run = child.wait(RACE_TIMEOUT);
        assert!(run.success, "a racing child failed; its stderr:\n{}", run.stderr);
        for line in &run.lines {
            log.record(line);
            reports.record(line);
        }
    }
    let raced = race_started.elapsed();
    reports.check_shared(&shared, &mut log);
    let refused = log.transfers.values().filter(|s| s.refused).count();
    let acked = log.acked - ACCOUNTS - SHARED;
    assert!(acked >= ACKED_MIN, "the children acknowledged only {acked} transfers");
    assert!(refused > 0, "no transfer met an empty account: the race did not test refusals");
    assert!(reports.races_lost > 0, "no writer ever lost a batch number: the processes did not race");

    rt.block_on(async {
        // A fresh store instance: every acknowledged transfer once, as sent; invariants.
        let store = connect(&name).await;
        let books = check_against_log(&store, customer, ACCOUNTS, &log).await;
        let outbox = books.outbox.clone().unwrap_or_default();
        // Every transfer here posted at once: the model replays them in the outbox's order.
        let found = books.transfers.clone().unwrap_or_default();
        assert!(found.iter().all(|t| t.state == TransferState::Posted), "a transfer is not posted");
        let overdraft: HashMap<AccountId, i64> = books
            .accounts
            .iter()
            .filter(|a| !a.account.is_system())
            .map(|a| (a.account.id, a.account.overdraft_limit_minor))
            .collect();
        let model = replay_in_commit_order(&outbox, &found.iter().collect::<Vec<_>>(), &overdraft);
        for a in &books.accounts {
            let want = model.get(&a.account.id).copied().unwrap_or(0);
            assert_eq!(a.account.posted_minor, want, "balance of {} against the model", a.account.id);
        }
        // Every replica sees the events in one order: another fresh instance, and each child's
        // replica up to where it read.
        let other = connect(&name).await;
        assert!(read_outbox(other.as_ref(), PAGE_LEN_MAX).await == outbox, "two fresh replicas disagree");
        for (len, d) in &reports.outboxes {
            assert!(*len <= outbox.len() && digest(&outbox[..*len]) == *d, "a child's replica has another order");
        }
        eprintln!(
            "race: {WRITERS} processes, {} transfers acknowledged ({acked} random, {SHARED} shared funding ids sent by \
             each process, {ACCOUNTS} setup), {refused} refused, {} races lost, {} events in order; \
             raced in {raced:?}, whole test {:?}",
            log.acked,
            reports.races_lost,
            outbox.len(),
            started.elapsed()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The crash test

/// A writer process: sends transfers from many tasks until it is killed. Passes at once when
/// not run as a child.
#[test]
fn crash_child() {
    let Some(env) = child_env() else { return };
    runtime().block_on(async {
        let (_store, ledger, accounts) = open_child(&env).await;
        send_from_tasks(&ledger, &accounts, TASKS, env.seed, CRASH_MIX).await;
        panic!("the senders stopped before the kill");
    });
}

/// Writer processes killed with SIGKILL at random moments while the others go on.
#[test]
#[ignore = "needs a MongoDB-protocol server: BP_MONGODB_URI (scripts/test.sh starts FerretDB)"]
fn writer_processes_killed() {
    let Run { name, _turn, _seed, mut rng, rt, started, mut log } = Run::start("crash");
    let customer = rt.block_on(async {
        let store = connect(&name).await;
        FUNDED.open(&Ledger::new(store), "crash", &mut log).await
    });
    let spawn = |rng: &mut StdRng| Child::spawn("crash_child", &children_env(&name, customer, rng.random()));
    let mut writers: Vec<Child> = (0..WRITERS).map(|_| spawn(&mut rng)).collect();
    let mut processes = WRITERS;
    wait_for("every writer commits", GO_ON_TIMEOUT, || writers.iter().all(|c| c.count("ACK") > 0));
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(KILL_AFTER_MS_MIN..=KILL_AFTER_MS_MAX)));
        let victim = rng.random_range(0..writers.len());
        let before: Vec<usize> = writers.iter().map(|c| c.count("ACK")).collect();
        let run = writers.swap_remove(victim).kill();
        assert!(run.killed, "kill {kill}: the writer ended before the kill; its stderr:\n{}", run.stderr);
        let acked = run.lines.iter().filter(|l| l.starts_with("ACK ")).count();
        run.lines.iter().for_each(|l| log.record(l));
        let mut survivors_before = before;
        survivors_before.swap_remove(victim);
        // Those that had committed before the kill commit again after it (one just started may
        // still be reading the log; it must commit by the end).
        wait_for(&format!("kill {kill}: the other writers go on"), GO_ON_TIMEOUT, || {
            writers.iter().zip(&survivors_before).all(|(c, b)| *b == 0 || c.count("ACK") > *b)
        });
        writers.push(spawn(&mut rng));
        processes += 1;
        eprintln!("kill {kill}: writer killed after {acked} acknowledged; the others went on; a new one started");
    }
    wait_for("every new writer commits", GO_ON_TIMEOUT, || writers.iter().all(|c| c.count("ACK") > 0));
    // The last crash: every writer at once.
    for child in writers {
        let run = child.kill();
        assert!(run.killed, "a writer ended before the kill; its stderr:\n{}", run.stderr);
        run.lines.iter().for_each(|l| log.record(l));
    }
    let acked = log.acked - ACCOUNTS;
    assert!(acked >= ACKED_MIN, "the writers acknowledged only {acked} transfers: the test exercised too little");
    assert!(log.finished() > 0, "no pending transfer was posted or voided");
    rt.block_on(async {
        // A restarted writer recovers: it reads the log, passes the checks, and commits.
        let store = connect(&name).await;
        check_against_log(&store, customer, ACCOUNTS, &log).await;
        let account = ok("accounts", store.accounts_of(customer).await)[0].id;
        ok(
            "a transfer after the crashes",
            Ledger::new(store).fund(TransferId::new_v7(), account, Money::new(1, EUR)).await,
        );
    });
    eprintln!(
        "crash: {processes} writer processes, {} SIGKILLs ({KILLS} one at a time, then {WRITERS} at once), \
         {} transfers checked ({acked} acknowledged by the writers, {} finished), in {:?}",
        KILLS + WRITERS,
        log.transfers.len(),
        log.finished(),
        started.elapsed()
    );
}
