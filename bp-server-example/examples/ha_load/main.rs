//! The HA test's load, faults and checks (issue 18), run by `scripts/ha-test.sh` against three
//! server processes on one database and one Kafka broker behind nginx, which that script
//! starts. It opens customers, signs them in through nginx, then runs paying clients (each
//! payment retried with its Idempotency-Key after a network error, 502, 503 or 504) and one
//! event-stream client per customer (resuming with `Last-Event-ID`) and a reader of balances,
//! all through nginx, while it kills the replica that holds the background jobs with SIGKILL
//! and later stops the database for ten seconds. Then it checks what must hold (`check`), prints the report of each
//! phase (`report`) and exits 1 if any check failed.
//!
//! Its environment, as the script sets it:
//!
//! | variable | what |
//! |---|---|
//! | `BP_CONFIG` | the replicas' configuration file (the database, the bus, the signing key) |
//! | `BP_HA_NGINX`, `BP_HA_CA` | nginx's URL (the servers' public URL) and the CA of its certificate (PEM) |
//! | `BP_HA_REPLICAS` | `pid,http://api,http://metrics` of each replica, separated by `;` |
//! | `BP_HA_DB_STOP`, `BP_HA_DB_START` | shell commands that stop and start the database |
//! | `BP_HA_CLIENT_ID`, `BP_HA_REDIRECT_URI` | the OAuth2 client to sign in as (DPoP-bound tokens) |
//! | `BP_HA_SIGN_IN` | `nginx` (the default) or `direct`: sign in at the first replica |
//! | `BP_HA_BACKUP`, `BP_HA_RESTORE` | shell commands that back the database up under load, and restore the backup and print the URI of a MongoDB-protocol server on it |
//! | `BP_HA_CUSTOMERS`, `BP_HA_THINK_MS`, `BP_HA_PHASE_S`, `BP_HA_OUTAGE_S` | the load's size and timing |

mod backup;
mod check;
mod faults;
mod pay;
mod report;
mod session;
mod setup;
mod sse;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Customers opened, each paying and followed by one stream client.
const CUSTOMERS_DEFAULT: u64 = 6;
/// Each paying client's pause between two payments (ms).
const THINK_MS_DEFAULT: u64 = 20;
/// How long each phase but the outage lasts (s): before the kill, after it, after the outage.
const PHASE_S_DEFAULT: u64 = 15;
/// How long the database stays stopped (s).
const OUTAGE_S_DEFAULT: u64 = 10;

/// What the script told this program.
#[derive(Debug)]
pub struct Env {
    pub config_path: std::path::PathBuf,
    pub nginx: String,
    pub ca_pem: Vec<u8>,
    pub replicas: Vec<Replica>,
    pub db_stop: String,
    pub db_start: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub sign_in: SignIn,
    pub customers: usize,
    pub think: Duration,
    pub phase: Duration,
    pub outage: Duration,
}

/// Where the customers sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// Through nginx, as everything else: each step may reach another replica.
    ThroughNginx,
    /// At the first replica, while sign-ins in progress live in the memory of the replica that
    /// began them (`BP_HA_SIGN_IN=direct`).
    AtTheFirstReplica,
}

/// One server process.
#[derive(Clone, Debug)]
pub struct Replica {
    pub pid: i32,
    pub base: String,
    pub metrics: String,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set: run scripts/ha-test.sh, which sets it"))
}

fn number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Env {
    fn read() -> Result<Self, String> {
        let replicas = var("BP_HA_REPLICAS")?
            .split(';')
            .map(|spec| match spec.split(',').collect::<Vec<_>>()[..] {
                [pid, base, metrics] => Ok(Replica {
                    pid: pid.parse().map_err(|_| format!("BP_HA_REPLICAS: bad pid in {spec}"))?,
                    base: base.to_owned(),
                    metrics: metrics.to_owned(),
                }),
                _ => Err(format!("BP_HA_REPLICAS: {spec} is not pid,api-url,metrics-url")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if replicas.len() < 2 {
            return Err("BP_HA_REPLICAS: the test needs at least two replicas".to_owned());
        }
        let ca = var("BP_HA_CA")?;
        let sign_in = match std::env::var("BP_HA_SIGN_IN").as_deref() {
            Err(_) | Ok("nginx") => SignIn::ThroughNginx,
            Ok("direct") => SignIn::AtTheFirstReplica,
            Ok(other) => return Err(format!("BP_HA_SIGN_IN={other}: nginx or direct")),
        };
        Ok(Self {
            config_path: var("BP_CONFIG")?.into(),
            nginx: var("BP_HA_NGINX")?,
            ca_pem: std::fs::read(&ca).map_err(|e| format!("reading {ca}: {e}"))?,
            replicas,
            db_stop: var("BP_HA_DB_STOP")?,
            db_start: var("BP_HA_DB_START")?,
            client_id: var("BP_HA_CLIENT_ID")?,
            redirect_uri: var("BP_HA_REDIRECT_URI")?,
            sign_in,
            customers: usize::try_from(number("BP_HA_CUSTOMERS", CUSTOMERS_DEFAULT)?.max(2)).unwrap_or(2),
            think: Duration::from_millis(number("BP_HA_THINK_MS", THINK_MS_DEFAULT)?),
            phase: Duration::from_secs(number("BP_HA_PHASE_S", PHASE_S_DEFAULT)?.max(5)),
            outage: Duration::from_secs(number("BP_HA_OUTAGE_S", OUTAGE_S_DEFAULT)?.max(1)),
        })
    }
}

/// The phases of the run, in order; a request belongs to the phase in which its answer (or its
/// failure) came, so that a request cut by a fault counts in that fault's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Before,
    ReplicaKill,
    DbOutage,
    After,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Before, Phase::ReplicaKill, Phase::DbOutage, Phase::After];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::ReplicaKill => "replica kill",
            Phase::DbOutage => "DB outage",
            Phase::After => "after",
        }
    }
}

/// When each fault began and ended, as the fault driver marks it.
#[derive(Debug, Default)]
pub struct Marks {
    /// Just before the SIGKILL was sent, and once the process was gone (a zombie, or reaped):
    /// a request in flight between the two may be cut by the kill.
    pub killed: OnceLock<Instant>,
    pub dead: OnceLock<Instant>,
    pub db_stopped: OnceLock<Instant>,
    pub db_started: OnceLock<Instant>,
}

impl Marks {
    pub fn phase_at(&self, at: Instant) -> Phase {
        let after = |mark: &OnceLock<Instant>| mark.get().is_some_and(|m| at >= *m);
        if after(&self.db_started) {
            Phase::After
        } else if after(&self.db_stopped) {
            Phase::DbOutage
        } else if after(&self.killed) {
            Phase::ReplicaKill
        } else {
            Phase::Before
        }
    }
}

/// One HTTP request (one attempt of a payment, or a read) as a client saw it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Instant,
    pub took: Duration,
    pub what: &'static str,
    pub outcome: Outcome,
}

impl Attempt {
    /// When its answer came.
    pub fn ended(&self) -> Instant {
        self.at + self.took
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer: its status, and whether it was an RFC 9457 problem document.
    Status { code: u16, problem: bool },
    /// No answer: the connection failed or broke.
    Network(String),
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !matches!(self, Outcome::Status { code, .. } if *code < 400)
    }
}

/// Everything the clients record, shared.
#[derive(Debug, Default)]
pub struct Record {
    pub attempts: Mutex<Vec<Attempt>>,
}

impl Record {
    pub fn push(&self, attempt: Attempt) {
        self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(attempt);
    }
}

/// What the faults measured.
#[derive(Debug, Default)]
pub struct FaultReport {
    pub killed: Option<usize>,
    pub jobs: Vec<String>,
    pub jobs_moved: Option<Duration>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(failures) if failures.is_empty() => {
            println!("ha_load: every check passed");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            eprintln!("ha_load: {} check(s) FAILED:", failures.len());
            for f in &failures {
                eprintln!("  - {f}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ha_load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; the failed checks, or an error that stopped it.
async fn run() -> Result<Vec<String>, String> {
    let env = Arc::new(Env::read()?);
    let config = bp_server_example::config::Config::load(Some(&env.config_path)).map_err(|e| e.to_string())?;
    let customers = setup::open_customers(&config, env.customers).await?;
    let sessions = session::sign_in_all(&env, &customers).await?;
    println!("ha_load: {} customers signed in through {}", sessions.len(), session::where_signed_in(&env));

    let record = Arc::new(Record::default());
    let marks = Arc::new(Marks::default());
    let stop_paying = Arc::new(AtomicBool::new(false));
    let followers = sse::start_all(&env, &sessions, record.clone()).await?;
    let payers = pay::start_all(&env, &sessions, record.clone(), stop_paying.clone());
    let reader = pay::start_reader(&env, &sessions, record.clone(), stop_paying.clone());

    let t0 = Instant::now();
    let backup = backup::start(env.phase / 2);
    let faults = faults::run(&env, &marks).await;
    stop_paying.store(true, Ordering::SeqCst);
    let mut payments = Vec::new();
    for payer in payers {
        payments.extend(payer.await.map_err(|e| format!("a paying client panicked: {e}"))?);
    }
    reader.await.map_err(|e| format!("the reader panicked: {e}"))?;
    let load_s = t0.elapsed();
    let faults = faults?;

    let streams = sse::finish(&env, &sessions, followers).await;
    let attempts = std::mem::take(&mut *record.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let mut failures = check::all(&config, &env, &customers, &sessions, &payments, &streams).await;
    failures.extend(check::requests(&attempts, &marks, &config));
    report::print(&attempts, &marks, &payments, &streams, &faults, load_s, &env);
    if let Some(backup) = backup {
        let taken = backup.await.map_err(|e| format!("the backup task panicked: {e}"))?;
        failures.extend(backup::check(&config, &customers, &payments, taken).await);
    }
    Ok(failures)
}
