//! What the tests with writer processes share (the SQLite crash test, the MongoDB multi-process
//! and crash tests): children that are this test binary run again, sending transfers and
//! reporting each on stdout; the log of what they said; and the check of a store against it.
//!
//! A child reports one whole line per write:
//!
//! - `SEND <id> <debit> <credit> <amount_minor> <posted|pending>` before sending a transfer,
//! - `ACK <id> <debit> <credit> <amount_minor> <posted|pending>` once the store accepted it,
//! - `REFUSED <id>` once the store refused it for lack of funds,
//! - `TRY <post|void> <id>` before posting or voiding an acknowledged pending transfer,
//! - `DONE <post|void> <id>` once the store acknowledged that.
//!
//! A line cut by a kill has no newline and is dropped; other lines are the tests' own.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bp_core::account::{AccountKind, NewAccount, SystemAccount};
use bp_core::clock::{Clock, SystemClock};
use bp_core::external::rail::clearing_accounts;
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::invariants::{self, Books, Scope};
use bp_core::money::{Currency, Money};
use bp_core::store::Store;
use bp_core::testing::books::read_books;
use bp_core::testing::fixtures::{ok, person};
use bp_core::transfer::{TransferKind, TransferRequest, TransferState, VoidReason};
use bp_core::{Error, Ledger, LedgerError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

pub const EUR: Currency = Currency::EUR;

/// Writes one line to stdout in a single write, under the lock, so that lines never interleave
/// and a kill cuts at most the line being written (which the parent then ignores).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    ok("write to stdout", out.write_all(&bytes).and_then(|()| out.flush()));
}

/// The seed in the variable `name`, or `default`.
pub fn seed_from(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Prints the seed and the variable to replay it with if a panic unwinds through the test.
pub struct SeedOnFailure {
    pub seed: u64,
    pub env: &'static str,
}

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the test failed with seed {0}; replay with {1}={0}", self.seed, self.env);
        }
    }
}

/// What a sender sends.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Transfers to send; `usize::MAX` to send until the process is killed.
    pub count: usize,
    /// The largest transfer, in minor units.
    pub amount_max_minor: i64,
    /// One transfer in this many is a pending one (then posted, voided or left); 0 for none.
    pub pending_one_in: u32,
}

/// Sends `mix.count` transfers of EUR between random distinct `accounts`, one after the other,
/// reporting each (see the module's doc). Panics on any answer but an acceptance or a refusal
/// for lack of funds.
pub async fn send_transfers<S: Store + ?Sized>(ledger: Ledger<S>, accounts: Vec<AccountId>, seed: u64, mix: Mix) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..mix.count {
        let debit = accounts[rng.random_range(0..accounts.len())];
        let credit = loop {
            let c = accounts[rng.random_range(0..accounts.len())];
            if c != debit {
                break c;
            }
        };
        let amount = rng.random_range(1..=mix.amount_max_minor);
        let pending = mix.pending_one_in > 0 && rng.random_ratio(1, mix.pending_one_in);
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
            Err(Error::Ledger(LedgerError::InsufficientFunds { .. })) => {
                say(&format!("REFUSED {id}"));
                continue;
            }
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

/// Runs `tasks` senders of `mix` at once, the task `i` seeded with `seed * tasks + i`, until
/// they have all sent their count.
pub async fn send_from_tasks<S: Store + ?Sized + 'static>(
    ledger: &Ledger<S>,
    accounts: &[AccountId],
    tasks: u64,
    seed: u64,
    mix: Mix,
) {
    let mut senders = JoinSet::new();
    for task in 0..tasks {
        let seed = seed.wrapping_mul(tasks).wrapping_add(task);
        senders.spawn(send_transfers(ledger.clone(), accounts.to_vec(), seed, mix));
    }
    while let Some(r) = senders.join_next().await {
        ok("a sender", r);
    }
}

/// The accounts the children move money between: one customer's, each funded from the
/// funding account.
#[derive(Clone, Copy, Debug)]
pub struct Funded {
    pub accounts: usize,
    /// Funding of each account, in minor units.
    pub fund_minor: i64,
    /// Overdraft limit of every tenth account, in minor units.
    pub overdraft_minor: i64,
}

impl Funded {
    /// Opens the customer `username` and the accounts, and funds them, recording each funding
    /// in `log`. Answers the customer.
    pub async fn open<S: Store + ?Sized>(&self, ledger: &Ledger<S>, username: &str, log: &mut Log) -> CustomerId {
        let customer = ok("customer", ledger.open_customer(person(username)).await);
        for i in 0..self.accounts {
            let account = ok(
                "account",
                ledger
                    .open_account(NewAccount {
                        id: AccountId::new_v7(),
                        customer_id: customer.id,
                        kind: AccountKind::Current,
                        currency: EUR,
                        overdraft_limit_minor: if i % 10 == 0 { self.overdraft_minor } else { 0 },
                    })
                    .await,
            );
            let id = TransferId::new_v7();
            ok("fund", ledger.fund(id, account.id, Money::new(self.fund_minor, EUR)).await);
            log.record_acked(id, SystemAccount::Funding.id(EUR), account.id, self.fund_minor);
        }
        customer.id
    }
}

// ---------------------------------------------------------------------------------------------
// Children

/// A child process: this test binary running only the test `test`.
pub struct Child {
    process: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    out_reader: Option<JoinHandle<()>>,
    err_reader: Option<JoinHandle<String>>,
}

/// What a child left: its complete stdout lines, its stderr, and how it ended.
pub struct ChildRun {
    pub lines: Vec<String>,
    pub stderr: String,
    /// Whether SIGKILL ended it.
    pub killed: bool,
    /// Whether it exited with status 0.
    pub success: bool,
}

impl Child {
    /// Starts the test `test` of this binary with `envs` set (the test tells from them that it
    /// runs as a child), its stdin, stdout and stderr piped.
    pub fn spawn(test: &str, envs: &[(&str, String)]) -> Self {
        let exe = ok("current_exe", std::env::current_exe());
        let mut command = Command::new(exe);
        command.args(["--exact", test, "--nocapture", "--test-threads=1"]);
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut process =
            ok("spawn the child", command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn());
        let stdout = process.stdout.take().expect("piped stdout");
        let mut stderr = process.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let out_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    // A line cut by the kill has no newline: it was never complete, so it is dropped.
                    Ok(0) => return,
                    Ok(_) if buf.ends_with(b"\n") => sink
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned()),
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
        Self { process, lines, out_reader: Some(out_reader), err_reader: Some(err_reader) }
    }

    /// How many complete lines the child has written so far that are the word `tag` or begin
    /// with it and a space.
    pub fn count(&self, tag: &str) -> usize {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .filter(|l| l.strip_prefix(tag).is_some_and(|rest| rest.is_empty() || rest.starts_with(' ')))
            .count()
    }

    /// Writes `line` to the child's stdin.
    pub fn tell(&mut self, line: &str) {
        let stdin = self.process.stdin.as_mut().expect("piped stdin");
        ok("write to the child", stdin.write_all(format!("{line}\n").as_bytes()).and_then(|()| stdin.flush()));
    }

    /// Kills the child with SIGKILL (it may have died already: `killed` then says so).
    pub fn kill(mut self) -> ChildRun {
        let _ = self.process.kill();
        self.finish()
    }

    /// Waits for the child to exit, killing it after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ChildRun {
        let deadline = Instant::now() + timeout;
        while ok("poll the child", self.process.try_wait()).is_none() {
            if Instant::now() > deadline {
                let _ = self.process.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.finish()
    }

    fn finish(&mut self) -> ChildRun {
        let status = ok("wait for the child", self.process.wait());
        if let Some(r) = self.out_reader.take() {
            r.join().expect("stdout reader");
        }
        let stderr = self.err_reader.take().map(|r| r.join().expect("stderr reader")).unwrap_or_default();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(PoisonError::into_inner));
        ChildRun { lines, stderr, killed: status.signal() == Some(9), success: status.success() }
    }
}

impl Drop for Child {
    /// A test that fails leaves no child running.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The log

/// What the children said about one transfer.
#[derive(Clone, Debug)]
pub struct Sent {
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount_minor: i64,
    pub pending: bool,
    pub acked: bool,
    /// Refused for lack of funds: it must not exist.
    pub refused: bool,
    /// A post or void that was tried, and whether it was acknowledged.
    pub finish: Option<(TransferState, bool)>,
}

/// Everything every child said.
#[derive(Debug, Default)]
pub struct Log {
    pub transfers: HashMap<TransferId, Sent>,
    pub acked: usize,
}

fn parse<T: FromStr>(line: &str, word: Option<&str>) -> T
where
    T::Err: std::fmt::Debug,
{
    ok(&format!("line `{line}`"), word.unwrap_or_default().parse())
}

impl Log {
    /// Records one line of a child; lines of other tags are left to the test.
    pub fn record(&mut self, line: &str) {
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
                    refused: false,
                    finish: None,
                };
                if tag == "SEND" {
                    assert!(self.transfers.insert(id, sent).is_none(), "transfer id {id} sent twice");
                } else {
                    let before = self.transfers.get_mut(&id).unwrap_or_else(|| panic!("ACK before SEND: {line}"));
                    assert!(!before.acked && !before.refused, "transfer {id} answered twice");
                    assert!(
                        (before.debit, before.credit, before.amount_minor, before.pending)
                            == (sent.debit, sent.credit, sent.amount_minor, sent.pending),
                        "ACK differs from SEND: {line}"
                    );
                    before.acked = true;
                    self.acked += 1;
                }
            }
            Some("REFUSED") => {
                let id: TransferId = parse(line, words.next());
                let sent = self.transfers.get_mut(&id).unwrap_or_else(|| panic!("REFUSED before SEND: {line}"));
                assert!(!sent.acked && !sent.refused, "transfer {id} answered twice");
                sent.refused = true;
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

    /// Records an acknowledged transfer that the test made itself.
    pub fn record_acked(&mut self, id: TransferId, debit: AccountId, credit: AccountId, amount_minor: i64) {
        self.record(&format!("SEND {id} {debit} {credit} {amount_minor} posted"));
        self.record(&format!("ACK {id} {debit} {credit} {amount_minor} posted"));
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

    /// Transfers acknowledged and then posted or voided.
    pub fn finished(&self) -> usize {
        self.transfers.values().filter(|s| matches!(s.finish, Some((_, true)))).count()
    }
}

/// Checks the ledger of `store` after the children: its invariants (`invariants::check` on the
/// books of `customer`'s `accounts_len` accounts and the system accounts, read back with every
/// transfer of the log), then everything the children said against it: every transfer the store
/// holds was sent, every acknowledged one is there once, as sent, in a state the log allows, and
/// a refused or unacknowledged one that is missing has no line and no event. Answers the books.
pub async fn check_against_log<S: Store + ?Sized + 'static>(
    store: &Arc<S>,
    customer: CustomerId,
    accounts_len: usize,
    log: &Log,
) -> Books {
    let mut accounts: Vec<AccountId> =
        ok("accounts_of", store.accounts_of(customer).await).iter().map(|a| a.id).collect();
    assert_eq!(accounts.len(), accounts_len);
    accounts.push(SystemAccount::Funding.id(EUR));
    // The rails' clearing accounts are open from the start (empty here).
    accounts.extend(clearing_accounts().into_iter().map(|(system, currency)| system.id(currency)));
    let mut books = read_books(store.as_ref(), &accounts, Scope::Ledger).await;
    assert_eq!(books.accounts.len(), accounts.len(), "the funding and clearing accounts exist");
    // One currency, summing to zero over exactly these accounts.
    let totals = books.totals.clone().unwrap_or_default();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!((totals[0].currency, totals[0].posted_minor), (EUR, 0), "{totals:?}");
    assert_eq!(totals[0].accounts, u64::try_from(accounts.len()).unwrap_or(0), "{totals:?}");

    // Every transfer any child sent, read concurrently: the ledger's transfers are those found.
    let ids: Vec<TransferId> = log.transfers.keys().copied().collect();
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(64) {
        let mut set = JoinSet::new();
        for id in chunk {
            let (store, id) = (Arc::clone(store), *id);
            set.spawn(async move { (id, ok("transfer", store.transfer(id).await)) });
        }
        while let Some(r) = set.join_next().await {
            found.push(ok("lookup", r));
        }
    }
    books.transfers = Some(found.iter().filter_map(|(_, t)| t.clone()).collect());
    if let Err(violation) = invariants::check(&books) {
        panic!("the ledger after the children: {violation}");
    }

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
            assert!(!sent.acked, "acknowledged transfer {id} is missing");
            assert!(!with_lines.contains(&id) && !in_events.contains(&id), "missing transfer {id} has lines or events");
            continue;
        };
        assert!(!sent.refused, "transfer {id} was refused, yet the store has it: {t:?}");
        assert_eq!(
            (t.debit_account, t.credit_account, t.amount, t.hold_until.is_some()),
            (sent.debit, sent.credit, Money::new(sent.amount_minor, EUR), sent.pending),
            "transfer {id} is not as sent"
        );
        let allowed = Log::allowed(sent);
        assert!(allowed.contains(&t.state), "transfer {id} is {:?}, expected one of {allowed:?}", t.state);
    }
    books
}
