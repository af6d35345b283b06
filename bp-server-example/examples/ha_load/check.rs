//! The checks, after the load: the store opened as the replicas open it (the ledger's
//! invariants over the whole ledger; every acknowledged payment there exactly once; balances
//! equal to the model of the payments), the streams' events against the store's, and the
//! requests of each phase. Each failed check is one line of the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bp_core::account::SystemAccount;
use bp_core::ids::{AccountId, TransferId};
use bp_core::invariants::{self, Books, Scope};
use bp_core::payments::{IdempotencyKey, transfer_id};
use bp_core::store::Store;
use bp_core::testing::books::read_books;
use bp_core::transfer::TransferState;
use bp_server_example::config::Config;
use bp_server_example::state::Stores;

use crate::pay::{Ended, Payment};
use crate::session::Session;
use crate::setup::{Customer, FUNDS_MINOR};
use crate::sse::Followed;
use crate::{Attempt, Env, Marks, Outcome, Phase};

/// How much longer than the server's request timeout a request may take before it counts as a
/// hang (nginx, TLS and the client's own scheduling).
const HANG_MARGIN: Duration = Duration::from_secs(2);

/// The store's and the streams' checks; see the module's doc.
pub async fn all(
    config: &Config,
    env: &Env,
    customers: &[Customer],
    sessions: &[Session],
    payments: &[Payment],
    streams: &[Followed],
) -> Vec<String> {
    let mut failures: Vec<String> = payments.iter().filter_map(unfinished).collect();
    let stores = match Stores::open(config).await {
        Ok(s) => s,
        Err(e) => {
            failures.push(format!("the store does not open: {e}"));
            return failures;
        }
    };
    let ledger = &*stores.ledger;
    let books = match ledger_books(ledger, customers).await {
        Ok(b) => b,
        Err(e) => {
            failures.push(e);
            return failures;
        }
    };
    if let Err(violation) = invariants::check(&books) {
        failures.push(format!("the ledger's invariants: {violation}"));
    }
    let model = match model_payments(ledger, customers, payments).await {
        Ok(m) => m,
        Err(e) => {
            failures.push(e);
            return failures;
        }
    };
    failures.extend(exactly_once(&books, &model));
    failures.extend(balances(&books, customers, &model));
    failures.extend(api_balances(env, sessions, &books).await);
    failures.extend(streams_complete(&books, sessions, streams));
    failures
}

/// A payment that did not end acknowledged: refused (a bug: every payment of the test is
/// valid and exempt), or given up after retrying `RETRY_FOR`.
fn unfinished(p: &Payment) -> Option<String> {
    match &p.ended {
        Ended::Acknowledged { state, .. } if state == "posted" => None,
        Ended::Acknowledged { transfer, state } => Some(format!("payment {} ({transfer}) was {state}", p.key)),
        Ended::Refused { status, body } => Some(format!("payment {} was refused: {status} {body}", p.key)),
        Ended::GaveUp(last) => {
            Some(format!("payment {} was never answered after {} attempts: {last}", p.key, p.attempts))
        }
    }
}

/// The whole ledger's books: every account (the customers' and the system's of each currency
/// the ledger has, which must be all of them: their count is the store's), their histories, the
/// outbox, the totals, and every transfer a posting names.
pub async fn ledger_books(ledger: &dyn Store, customers: &[Customer]) -> Result<Books, String> {
    let totals = ledger.totals().await.map_err(|e| format!("reading the totals: {e}"))?;
    let mut accounts: Vec<AccountId> = customers.iter().flat_map(|c| c.accounts).collect();
    for total in &totals {
        accounts.extend(SystemAccount::ALL.iter().map(|s| s.id(total.currency)));
    }
    let mut books = read_books(ledger, &accounts, Scope::Ledger).await;
    for total in &totals {
        let listed = books.accounts.iter().filter(|a| a.account.currency == total.currency).count();
        if u64::try_from(listed).ok() != Some(total.accounts) {
            return Err(format!(
                "the ledger has {} accounts in {}, the test knows {listed}: it cannot check the whole ledger",
                total.accounts, total.currency
            ));
        }
    }
    let named: BTreeSet<TransferId> = postings(&books).map(|p| p.transfer_id).collect();
    let mut transfers = Vec::with_capacity(named.len());
    for id in named {
        match ledger.transfer(id).await {
            Ok(Some(t)) => transfers.push(t),
            Ok(None) => return Err(format!("transfer {id} has postings but is not in the store")),
            Err(e) => return Err(format!("reading transfer {id}: {e}")),
        }
    }
    books.transfers = Some(transfers);
    Ok(books)
}

fn postings(books: &Books) -> impl Iterator<Item = &bp_core::transfer::Posting> {
    books.accounts.iter().filter_map(|a| a.history.as_ref()).flat_map(|h| h.postings.iter())
}

/// A payment that moved money: acknowledged, or committed though its client never got the
/// answer (looked up by the id its key gives).
#[derive(Debug)]
struct Moved {
    transfer: TransferId,
    payment: Payment,
}

/// The payments that moved money, each checked against the store's transfer.
async fn model_payments(
    ledger: &dyn Store,
    customers: &[Customer],
    payments: &[Payment],
) -> Result<Vec<Moved>, String> {
    let mut moved = Vec::new();
    for p in payments {
        let key = IdempotencyKey::parse(&p.key).map_err(|_| format!("the test made a bad key {}", p.key))?;
        let id = transfer_id(customers[p.payer].id, &key);
        if let Ended::Acknowledged { transfer, .. } = &p.ended
            && transfer != &id.to_string()
        {
            return Err(format!("payment {} was acknowledged as {transfer}, not {id}", p.key));
        }
        let found = ledger.transfer(id).await.map_err(|e| format!("reading transfer {id}: {e}"))?;
        match (found, &p.ended) {
            (None, Ended::Acknowledged { .. }) => {
                return Err(format!("payment {} ({id}) was acknowledged but is not in the store", p.key));
            }
            (None, _) => {}
            (Some(t), _) => {
                let same =
                    t.debit_account == p.from && t.credit_account == p.to && t.amount.amount_minor() == p.amount_minor;
                if !same || t.state != TransferState::Posted {
                    return Err(format!("transfer {id} of payment {} is not what was asked: {t:?}", p.key));
                }
                moved.push(Moved { transfer: id, payment: p.clone() });
            }
        }
    }
    Ok(moved)
}

/// Every payment that moved money has exactly one debit and one credit line; every other
/// transfer with lines is a funding of the setup.
fn exactly_once(books: &Books, model: &[Moved]) -> Vec<String> {
    let mut lines: BTreeMap<TransferId, Vec<AccountId>> = BTreeMap::new();
    for p in postings(books) {
        lines.entry(p.transfer_id).or_default().push(p.account_id);
    }
    let mut failures = Vec::new();
    for m in model {
        let found = lines.remove(&m.transfer).unwrap_or_default();
        if found.len() != 2 || !found.contains(&m.payment.from) || !found.contains(&m.payment.to) {
            failures.push(format!(
                "payment {} ({}, {} attempts) has {} ledger lines, not one debit and one credit",
                m.payment.key,
                m.transfer,
                m.payment.attempts,
                found.len()
            ));
        }
    }
    let funding = SystemAccount::Funding;
    for (transfer, accounts) in lines {
        if !accounts.iter().any(|a| SystemAccount::from_id(*a).is_some_and(|(s, _)| s == funding)) {
            failures.push(format!("transfer {transfer} moved money, but no client of the test made it"));
        }
    }
    failures
}

/// Each customer account's posted balance is its funding plus the payments that moved money;
/// nothing is held.
fn balances(books: &Books, customers: &[Customer], model: &[Moved]) -> Vec<String> {
    let mut expected: BTreeMap<AccountId, i64> =
        customers.iter().flat_map(|c| c.accounts).map(|a| (a, FUNDS_MINOR)).collect();
    for m in model {
        *expected.entry(m.payment.from).or_default() -= m.payment.amount_minor;
        *expected.entry(m.payment.to).or_default() += m.payment.amount_minor;
    }
    let mut failures = Vec::new();
    for a in &books.accounts {
        let Some(want) = expected.get(&a.account.id) else { continue };
        if a.account.posted_minor != *want || a.account.held_minor != 0 {
            failures.push(format!(
                "account {}: posted {} held {} minor units, the payments give posted {want} held 0",
                a.account.id, a.account.posted_minor, a.account.held_minor
            ));
        }
    }
    failures
}

/// The API (through nginx) shows each customer the store's balances and last events.
async fn api_balances(env: &Env, sessions: &[Session], books: &Books) -> Vec<String> {
    let http = match crate::session::client(env, Duration::from_secs(20)) {
        Ok(h) => h,
        Err(e) => return vec![e],
    };
    let stored: BTreeMap<AccountId, &bp_core::account::Account> =
        books.accounts.iter().map(|a| (a.account.id, &a.account)).collect();
    let mut failures = Vec::new();
    for s in sessions {
        match s.accounts(&http).await {
            Ok(list) => {
                for a in list.accounts {
                    let same = stored.get(&a.id).is_some_and(|st| {
                        st.posted_minor == a.balances.posted.amount_minor() && st.last_event_seq == a.last_event_seq
                    });
                    if !same {
                        failures.push(format!("GET /v1/accounts shows account {} unlike the store", a.id));
                    }
                }
            }
            Err(e) => failures.push(format!("reading {}'s accounts after the run: {e}", s.customer.username)),
        }
    }
    failures
}

/// Every stream client received every event of its customer's accounts after its start, once
/// each, in order, as the store has them; and nothing else.
fn streams_complete(books: &Books, sessions: &[Session], streams: &[Followed]) -> Vec<String> {
    let stored: BTreeMap<AccountId, &Vec<bp_core::event::Event>> =
        books.accounts.iter().filter_map(|a| a.history.as_ref().map(|h| (a.account.id, &h.events))).collect();
    let mut failures = Vec::new();
    for (s, f) in sessions.iter().zip(streams) {
        let who = &s.customer.username;
        failures.extend(f.malformed.iter().map(|m| format!("{who}'s stream sent a malformed message: {m}")));
        for account in f.events.keys().filter(|a| !f.start.contains_key(a)) {
            failures.push(format!("{who}'s stream sent events of account {account}, not theirs"));
        }
        for (account, start) in &f.start {
            let want: Vec<_> =
                stored.get(account).map_or(&[][..], |e| &e[..]).iter().filter(|e| e.seq > *start).collect();
            let got: Vec<_> = f.events.get(account).map_or(&[][..], |e| &e[..]).iter().collect();
            if let Some(problem) = sequence_problem(*start, &got, &want) {
                failures.push(format!("{who}'s stream, account {account}: {problem}"));
            }
        }
    }
    failures
}

/// What is wrong with `got` against `want` (the events after `start`), if anything: the
/// first duplicate, gap or difference.
fn sequence_problem(start: u64, got: &[&bp_core::event::Event], want: &[&bp_core::event::Event]) -> Option<String> {
    let mut last = start;
    for (i, e) in got.iter().enumerate() {
        if e.seq <= last {
            return Some(format!("event {} again (or out of order) after {last}", e.seq));
        }
        if e.seq != last + 1 {
            return Some(format!("a gap: event {} after {last}", e.seq));
        }
        match want.get(i) {
            Some(w) if *w == *e => {}
            Some(w) => return Some(format!("event {} differs from the store's: {e:?} / {w:?}", e.seq)),
            None => return Some(format!("event {} is not in the store", e.seq)),
        }
        last = e.seq;
    }
    (got.len() < want.len()).then(|| format!("received {} of the {} events after {start}", got.len(), want.len()))
}

/// How long after a replica is gone nginx may still send a request to it on a kept-alive
/// connection it has not yet seen closed.
const NGINX_NOTICES: Duration = Duration::from_secs(1);

/// The requests' outcomes: no `500` nor any 4xx; nginx's `502` or a broken connection only for a
/// request in flight while the killed replica died (from the signal until it was gone, and
/// [`NGINX_NOTICES`] after); a server's `503` only as a problem document
/// and only for a request in flight during the database outage, where there must be some (else
/// the outage was not seen); no request longer than the server's own timeout (a hang); some
/// requests in every phase.
pub fn requests(attempts: &[Attempt], marks: &Marks, config: &Config) -> Vec<String> {
    let hang = Duration::from_millis(config.server.request_timeout_ms) + HANG_MARGIN;
    let dying = marks.killed.get().copied().zip(marks.dead.get().copied());
    // Sent before the replica was gone, or within NGINX_NOTICES after: nginx may send a request
    // on a kept-alive connection to the dead replica before it has seen that connection closed,
    // and does not resend a POST (see deploy/nginx/bp.conf.template).
    let cut_by_kill =
        |a: &Attempt| dying.is_some_and(|(killed, dead)| a.at <= dead + NGINX_NOTICES && a.ended() >= killed);
    let outage = marks.db_stopped.get().copied().zip(marks.db_started.get().copied());
    let in_outage = |a: &Attempt| outage.is_some_and(|(stop, start)| a.at <= start && a.ended() >= stop);
    let mut failures = Vec::new();
    let mut outage_503 = 0;
    let mut seen = BTreeSet::new();
    for a in attempts {
        let phase = marks.phase_at(a.ended());
        seen.insert(phase);
        let expected = match &a.outcome {
            Outcome::Status { code, .. } if *code < 400 => true,
            Outcome::Status { code: 503, problem: true } if in_outage(a) => {
                outage_503 += 1;
                true
            }
            Outcome::Status { code: 502, .. } | Outcome::Network(_) => cut_by_kill(a),
            _ => false,
        };
        if !expected {
            failures.push(format!(
                "{} in phase {}: {:?} after {} ms",
                a.what,
                phase.name(),
                a.outcome,
                a.took.as_millis()
            ));
        }
        if a.took > hang {
            failures.push(format!("{} in phase {} took {} ms: a hang", a.what, phase.name(), a.took.as_millis()));
        }
    }
    for phase in Phase::ALL.into_iter().filter(|p| !seen.contains(p)) {
        failures.push(format!("no request was answered in phase {}", phase.name()));
    }
    if outage_503 == 0 {
        failures.push("no request got a 503 during the database outage: the fault was not seen".to_owned());
    }
    failures
}
