//! Ledger benchmark: internal transfers through the SQLite store's public API into a fresh,
//! durable database file, from 1,024 concurrent submitters over 10,000 funded accounts.
//!
//! `cargo run --release -p bp-storage --example ledger_bench`
//!
//! Prints one `name value` line per figure (see `docs/benchmarks.md`). Environment:
//! `BP_BENCH_TRANSFERS` (default 400000) group-commit transfers per phase,
//! `BP_BENCH_BASELINE_TRANSFERS` (default 20000) for the one-transaction-per-transfer baseline,
//! `BP_BENCH_SUBMITTERS` (default 1024) concurrent submitters in the two group-commit phases (each
//! waits for its answer before it sends again, so the latency is about submitters ÷ throughput),
//! `BP_BENCH_DIR` where the database files go (default: a temporary folder), `BP_BENCH_CALLGRIND=1`
//! under callgrind to dump the counts before the uniform phase and after each phase. With the feature
//! `mongodb` and `BP_BENCH_MONGODB_URI` set, also the MongoDB store: one writer process, then
//! two on one database, `BP_BENCH_MONGODB_TRANSFERS` (default 10000) transfers each phase.
//!
//! The ratio to a PostgreSQL ledger measured in the same run (issue 19's measure, which the
//! machine's load moves less than either figure): `BP_BENCH_PG_UNIFORM_TPS` and
//! `BP_BENCH_PG_HOT_TPS` give the baseline's figures, or `BP_BENCH_PG_BASELINE=<script>` runs
//! the script (`../shared/tools/pg-baseline/run.sh`, which prints `pg_uniform_tps N` and
//! `pg_hot_tps N`) right after the SQLite phases; then `pg_ratio_uniform` and `pg_ratio_hot`
//! follow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::money::{Currency, Money};
use bp_core::service::current_account;
use bp_core::{Ledger, Store};
use bp_storage::sqlite::{SqliteConfig, SqliteStore};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const ACCOUNTS: usize = 10_000;
const SUBMITTERS: usize = 1_024;
const CUSTOMERS: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// How submitters choose the two accounts of a transfer.
#[derive(Clone)]
enum Choice {
    Uniform,
    /// Prefix sums of integer weights ⌊10^18 / k²⌋ for ranks k = 1..=ACCOUNTS: Zipf, exponent 2.
    Zipf(Arc<Vec<u64>>),
}

impl Choice {
    fn zipf() -> Self {
        let mut sums = Vec::with_capacity(ACCOUNTS);
        let mut total = 0u64;
        for k in 1..=ACCOUNTS as u64 {
            total += 1_000_000_000_000_000_000 / (k * k);
            sums.push(total);
        }
        Choice::Zipf(Arc::new(sums))
    }

    /// An index into `len` accounts (Zipf is over `ACCOUNTS`).
    fn pick(&self, rng: &mut SmallRng, len: usize) -> usize {
        match self {
            Choice::Uniform => rng.random_range(0..len),
            Choice::Zipf(sums) => {
                let total = *sums.last().unwrap_or(&1);
                let x = rng.random_range(0..total);
                sums.partition_point(|&s| s <= x)
            }
        }
    }

    fn pair(&self, rng: &mut SmallRng, len: usize) -> (usize, usize) {
        loop {
            let (a, b) = (self.pick(rng, len), self.pick(rng, len));
            if a != b {
                return (a, b);
            }
        }
    }
}

async fn setup(path: &std::path::Path, config: SqliteConfig) -> (Ledger<SqliteStore>, Arc<Vec<AccountId>>) {
    let store = SqliteStore::open(path, config).expect("open the store");
    let ledger = Ledger::new(Arc::new(store));
    let (_, accounts) = open_accounts(&ledger, CUSTOMERS, ACCOUNTS).await;
    (ledger, accounts)
}

/// Opens `customers` customers and `accounts` funded accounts, through group commit. Answers
/// the customers and the accounts.
async fn open_accounts<S: Store + ?Sized + 'static>(
    ledger: &Ledger<S>,
    customers_len: usize,
    accounts_len: usize,
) -> (Vec<CustomerId>, Arc<Vec<AccountId>>) {
    let mut customers = Vec::with_capacity(customers_len);
    for i in 0..customers_len {
        let id = CustomerId::new_v7();
        ledger
            .open_customer(NewCustomer::person(
                id,
                Username::parse(&format!("bench{i}")).expect("valid username"),
                "Bench",
                &format!("Customer {i}"),
                KycStatus::Verified,
            ))
            .await
            .expect("open customer");
        customers.push(id);
    }
    // Open and fund the accounts concurrently, so setup itself goes through group commit.
    let mut tasks = Vec::new();
    for chunk in 0..64 {
        let ledger = ledger.clone();
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (chunk..accounts_len).step_by(64) {
                let id = AccountId::new_v7();
                ledger
                    .open_account(current_account(id, customers[i % customers.len()], Currency::EUR))
                    .await
                    .expect("open account");
                ledger
                    .fund(TransferId::new_v7(), id, Money::new(1_000_000_000_000, Currency::EUR))
                    .await
                    .expect("fund account");
                ids.push(id);
            }
            ids
        }));
    }
    let mut accounts = Vec::with_capacity(accounts_len);
    for t in tasks {
        accounts.extend(t.await.expect("setup task"));
    }
    (customers, Arc::new(accounts))
}

struct Run {
    transfers_per_s: u64,
    latencies_us: Vec<u64>,
}

async fn run<S: Store + ?Sized + 'static>(
    ledger: &Ledger<S>,
    accounts: &Arc<Vec<AccountId>>,
    choice: Choice,
    total: usize,
    submitters: usize,
    seed: u64,
) -> Run {
    let per_task = total.div_ceil(submitters);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(submitters);
    for s in 0..submitters {
        let ledger = ledger.clone();
        let accounts = Arc::clone(accounts);
        let choice = choice.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(s as u64));
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let (a, b) = choice.pair(&mut rng, accounts.len());
                let amount = Money::new(rng.random_range(1..=10_000), Currency::EUR);
                let t0 = Instant::now();
                ledger
                    .internal_transfer(TransferId::new_v7(), accounts[a], accounts[b], amount, None)
                    .await
                    .expect("transfer accepted");
                latencies.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::with_capacity(per_task * submitters);
    for t in tasks {
        latencies_us.extend(t.await.expect("submitter"));
    }
    let elapsed = start.elapsed();
    let done = latencies_us.len() as u64;
    Run { transfers_per_s: per_second(done, elapsed), latencies_us }
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    count.saturating_mul(1_000_000) / us
}

fn percentile_us(latencies: &mut [u64], per_mille: usize) -> u64 {
    latencies.sort_unstable();
    let i = (latencies.len() * per_mille / 1000).min(latencies.len().saturating_sub(1));
    latencies.get(i).copied().unwrap_or(0)
}

/// Microseconds as milliseconds with three decimals, without floating point.
fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// Where the writer's time went, on stderr (stdout carries only the figures).
fn report(phase: &str, ledger: &Ledger<SqliteStore>) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = ledger.store().writer_stats();
    let commands = s.commands.load(Relaxed).max(1);
    // Bytes this process has written to storage so far (Linux only), to relate throughput to I/O.
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field =
        |name: &str| io.lines().find_map(|l| l.strip_prefix(name).map(str::to_owned)).unwrap_or_else(|| "?".into());
    let written = format!("{} write_syscalls {}", field("write_bytes: "), field("syscw: "));
    eprintln!(
        "{phase}: written_bytes {written} batches {} commands {} mean_batch {} per_command_us execute {}.{:02} index {}.{:02} commit {}.{:02} answer {}.{:02}",
        s.batches.load(Relaxed),
        commands,
        commands / s.batches.load(Relaxed).max(1),
        s.execute_us.load(Relaxed) / commands,
        s.execute_us.load(Relaxed) * 100 / commands % 100,
        s.index_us.load(Relaxed) / commands,
        s.index_us.load(Relaxed) * 100 / commands % 100,
        s.commit_us.load(Relaxed) / commands,
        s.commit_us.load(Relaxed) * 100 / commands % 100,
        s.answer_us.load(Relaxed) / commands,
        s.answer_us.load(Relaxed) * 100 / commands % 100,
    );
}

async fn verify(ledger: &Ledger<SqliteStore>) {
    for t in ledger.store().as_ref().totals().await.expect("totals") {
        assert_eq!(t.posted_minor, 0, "{} must sum to zero", t.currency);
    }
}

/// Under `valgrind --tool=callgrind` (`BP_BENCH_CALLGRIND=1`), dumps the instruction counts so
/// far, so that the second dump holds the uniform phase alone and the third the hot phase,
/// function by function.
fn callgrind_dump(when: &str) {
    if std::env::var_os("BP_BENCH_CALLGRIND").is_none() {
        return;
    }
    let pid = std::process::id().to_string();
    // Its report goes to stderr: stdout carries only the figures.
    let status =
        std::process::Command::new("callgrind_control").args(["--dump", &pid]).stdout(std::io::stderr()).status();
    eprintln!("callgrind dump {when}: {status:?}");
}

/// A PostgreSQL ledger's figures, transactions per second.
struct PgBaseline {
    uniform_tps: u64,
    hot_tps: u64,
}

/// The baseline's figures: given (`BP_BENCH_PG_UNIFORM_TPS`, `BP_BENCH_PG_HOT_TPS`), or
/// measured now by the script `BP_BENCH_PG_BASELINE` names; `None` when neither is set.
fn pg_baseline() -> Option<PgBaseline> {
    let given = |name: &str| std::env::var(name).ok().map(|v| v.trim().parse::<u64>().expect(name));
    if let (Some(uniform_tps), Some(hot_tps)) = (given("BP_BENCH_PG_UNIFORM_TPS"), given("BP_BENCH_PG_HOT_TPS")) {
        return Some(PgBaseline { uniform_tps, hot_tps });
    }
    let script = std::env::var_os("BP_BENCH_PG_BASELINE")?;
    eprintln!("measuring the PostgreSQL baseline with {}…", script.to_string_lossy());
    let out = std::process::Command::new(&script).output().expect("run the PostgreSQL baseline script");
    assert!(out.status.success(), "the PostgreSQL baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let figure = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("the baseline printed no {name}: {text}"))
    };
    Some(PgBaseline { uniform_tps: figure("pg_uniform_tps "), hot_tps: figure("pg_hot_tps ") })
}

/// `ours ÷ theirs` with two decimals, in integers.
fn ratio(ours: u64, theirs: u64) -> String {
    let x100 = ours * 100 / theirs.max(1);
    format!("{}.{:02}", x100 / 100, x100 % 100)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    #[cfg(feature = "mongodb")]
    if mongo::is_child() {
        return mongo::child().await;
    }
    let transfers = env_usize("BP_BENCH_TRANSFERS", 400_000);
    let submitters = env_usize("BP_BENCH_SUBMITTERS", SUBMITTERS).max(1);
    let baseline_transfers = env_usize("BP_BENCH_BASELINE_TRANSFERS", 20_000);
    let tmp = tempfile::tempdir().expect("temporary folder");
    let dir = std::env::var_os("BP_BENCH_DIR").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&dir).expect("bench folder");
    let group_path = dir.join("ledger-bench-group.db");
    let baseline_path = dir.join("ledger-bench-baseline.db");
    for p in [&group_path, &baseline_path] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
    }

    let (ledger, accounts) = setup(&group_path, SqliteConfig::default()).await;
    report("setup", &ledger);
    callgrind_dump("before the uniform phase");
    let mut uniform = run(&ledger, &accounts, Choice::Uniform, transfers, submitters, 1).await;
    callgrind_dump("after the uniform phase");
    report("setup+uniform", &ledger);
    let hot = run(&ledger, &accounts, Choice::zipf(), transfers, submitters, 2).await;
    callgrind_dump("after the hot phase");
    report("setup+uniform+hot", &ledger);
    verify(&ledger).await;
    drop(ledger);

    let baseline_config = SqliteConfig { batch_len_max: 1, ..SqliteConfig::default() };
    let (baseline_ledger, baseline_accounts) = setup(&baseline_path, baseline_config).await;
    let baseline = run(&baseline_ledger, &baseline_accounts, Choice::Uniform, baseline_transfers, SUBMITTERS, 3).await;
    report("baseline setup+uniform", &baseline_ledger);
    verify(&baseline_ledger).await;

    let p50 = percentile_us(&mut uniform.latencies_us, 500);
    let p99 = percentile_us(&mut uniform.latencies_us, 990);
    println!("group_commit_transfers_per_s {}", uniform.transfers_per_s);
    println!("hot_account_transfers_per_s {}", hot.transfers_per_s);
    println!("baseline_transfers_per_s {}", baseline.transfers_per_s);
    println!("speedup {}", ratio(uniform.transfers_per_s, baseline.transfers_per_s));
    println!("p50_commit_latency_ms {}", ms(p50));
    println!("p99_commit_latency_ms {}", ms(p99));
    if let Some(pg) = pg_baseline() {
        println!("pg_uniform_tps {}", pg.uniform_tps);
        println!("pg_hot_tps {}", pg.hot_tps);
        println!("pg_ratio_uniform {}", ratio(uniform.transfers_per_s, pg.uniform_tps));
        println!("pg_ratio_hot {}", ratio(hot.transfers_per_s, pg.hot_tps));
    }

    #[cfg(feature = "mongodb")]
    if std::env::var_os(mongo::URI_ENV).is_some() {
        mongo::bench().await;
    }
}

/// The MongoDB store (feature `mongodb`), when `BP_BENCH_MONGODB_URI` names a server: one
/// writer process, then two writer processes on one database (this example run again as the
/// children, started together).
#[cfg(feature = "mongodb")]
mod mongo {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    use bp_core::ids::CustomerId;
    use bp_core::{Ledger, Store};
    use bp_storage::mongodb::{MongoConfig, MongoStore};

    use super::{Choice, env_usize, ms, open_accounts, per_second, percentile_us, run};

    pub const URI_ENV: &str = "BP_BENCH_MONGODB_URI";
    /// Set only in a child: the database it writes.
    const CHILD_DB: &str = "BP_BENCH_MONGODB_CHILD_DB";
    /// The customers whose accounts a child moves money between, comma-separated.
    const CHILD_CUSTOMERS: &str = "BP_BENCH_MONGODB_CHILD_CUSTOMERS";
    const CUSTOMERS: usize = 10;
    /// Fewer accounts than SQLite's: FerretDB opens them at a few hundred a second.
    const ACCOUNTS: usize = 1_000;
    /// Concurrent submitters per process: enough to fill a batch (`batch_len_max` 256).
    const SUBMITTERS: usize = 256;

    /// Whether this process is a writer the bench started.
    pub fn is_child() -> bool {
        std::env::var_os(CHILD_DB).is_some()
    }

    fn transfers() -> usize {
        env_usize("BP_BENCH_MONGODB_TRANSFERS", 10_000)
    }

    async fn connect(db: &str) -> Ledger<MongoStore> {
        let uri = std::env::var(URI_ENV).expect("BP_BENCH_MONGODB_URI");
        Ledger::new(Arc::new(MongoStore::connect(&uri, db, MongoConfig::default()).await.expect("connect")))
    }

    /// A writer process: waits for a line on stdin, runs its half, prints its latencies.
    pub async fn child() {
        let db = std::env::var(CHILD_DB).expect("child database");
        let ledger = connect(&db).await;
        let mut accounts = Vec::new();
        for c in std::env::var(CHILD_CUSTOMERS).expect("child customers").split(',') {
            let c: CustomerId = c.parse().expect("customer id");
            accounts.extend(ledger.accounts_of(c).await.expect("accounts").into_iter().map(|a| a.id));
        }
        println!("READY");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).expect("GO");
        let seed = u64::from(std::process::id());
        let r = run(&ledger, &Arc::new(accounts), Choice::Uniform, transfers() / 2, SUBMITTERS, seed).await;
        let lat: Vec<String> = r.latencies_us.iter().map(u64::to_string).collect();
        println!("LAT {}", lat.join(","));
        let stats = ledger.store().stats();
        eprintln!("child: batches {} races_lost {}", stats.batches(), stats.races_lost());
    }

    /// One writer process, then two on one database; prints their figures.
    pub async fn bench() {
        let db = format!("bp_bench_{}", uuid::Uuid::now_v7().simple());
        let ledger = connect(&db).await;
        let t0 = Instant::now();
        let (customers, accounts) = open_accounts(&ledger, CUSTOMERS, ACCOUNTS).await;
        eprintln!("mongodb setup: {ACCOUNTS} accounts in {:?}", t0.elapsed());
        let mut one = run(&ledger, &accounts, Choice::Uniform, transfers(), SUBMITTERS, 4).await;
        let s = ledger.store().stats();
        eprintln!("mongodb one writer: batches {} races_lost {}", s.batches(), s.races_lost());
        drop(ledger);
        println!("mongodb_one_writer_transfers_per_s {}", one.transfers_per_s);
        println!("mongodb_one_writer_p99_commit_latency_ms {}", ms(percentile_us(&mut one.latencies_us, 990)));

        let exe = std::env::current_exe().expect("current_exe");
        let customers: Vec<String> = customers.iter().map(ToString::to_string).collect();
        let mut children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .env(CHILD_DB, &db)
                    .env(CHILD_CUSTOMERS, customers.join(","))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn a writer")
            })
            .collect();
        let mut outs: Vec<_> =
            children.iter_mut().map(|c| std::io::BufReader::new(c.stdout.take().expect("stdout"))).collect();
        for out in &mut outs {
            let mut line = String::new();
            out.read_line(&mut line).expect("READY");
            assert_eq!(line.trim(), "READY");
        }
        let start = Instant::now();
        for c in &mut children {
            c.stdin.as_mut().expect("stdin").write_all(b"GO\n").expect("GO");
        }
        let mut latencies_us: Vec<u64> = Vec::new();
        for out in &mut outs {
            let mut line = String::new();
            out.read_line(&mut line).expect("LAT");
            let lat = line.trim().strip_prefix("LAT ").expect("LAT line");
            latencies_us.extend(lat.split(',').map(|v| v.parse::<u64>().expect("latency")));
        }
        let elapsed = start.elapsed();
        for mut c in children {
            assert!(c.wait().expect("wait").success(), "a writer failed");
        }
        let verify = connect(&db).await;
        for t in verify.store().totals().await.expect("totals") {
            assert_eq!(t.posted_minor, 0, "{} must sum to zero", t.currency);
        }
        let done = u64::try_from(latencies_us.len()).unwrap_or(u64::MAX);
        println!("mongodb_two_writers_transfers_per_s {}", per_second(done, elapsed));
        println!("mongodb_two_writers_p99_commit_latency_ms {}", ms(percentile_us(&mut latencies_us, 990)));
    }
}
