//! The paying clients: each customer pays, one payment at a time, to their own other account
//! or to another customer's, low-value amounts (exempt from SCA), through nginx. A payment's
//! Idempotency-Key is made before its first sending and sent again, with the same body, on
//! every retry: after a network error or a 502, 503 or 504, until it is answered or
//! `RETRY_FOR` has passed. Every fifth payment is followed by a read of the accounts, and one
//! reader reads a customer's accounts every `READER_PAUSE`, whatever the payments do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bp_core::api::TransferResponse;
use bp_core::ids::AccountId;
use bp_core::money::{Currency, Money};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;

use crate::session::Session;
use crate::{Attempt, Env, Outcome, Record};

/// How long a payment is retried before its client gives up on it (the database outage is
/// shorter).
const RETRY_FOR: Duration = Duration::from_secs(60);
/// The first pause before a retry, doubled each time up to `RETRY_PAUSE_MAX`.
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(100);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// A client's wait for one answer: above the server's own request timeout (10 s) and nginx's
/// (15 s), so that a hang shows as a long request rather than as a client's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest payment (minor units): under the low-value exemption's 30 EUR.
const AMOUNT_MINOR_MAX: i64 = 500;
/// Payments between two reads of the accounts.
const READ_EVERY: usize = 5;
/// The reader's pause between two reads.
const READER_PAUSE: Duration = Duration::from_millis(100);

/// One payment as its client made it, and how it ended.
#[derive(Clone, Debug)]
pub struct Payment {
    pub payer: usize,
    pub key: String,
    pub from: AccountId,
    pub to: AccountId,
    pub amount_minor: i64,
    pub attempts: u32,
    pub ended: Ended,
    /// When its last answer came.
    pub ended_at: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Answered 201: the transfer's id and state.
    Acknowledged { transfer: String, state: String },
    /// Answered otherwise, not to be retried: the status and the body.
    Refused { status: u16, body: String },
    /// No answer within `RETRY_FOR`: the last outcome.
    GaveUp(String),
}

/// Starts one paying client per session; each returns its payments once `stop` is set.
pub fn start_all(
    env: &Env,
    sessions: &[Session],
    record: Arc<Record>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Payment>>> {
    let targets: Vec<(AccountId, String)> =
        sessions.iter().flat_map(|s| s.accounts.accounts.iter().map(|a| (a.id, a.number.clone()))).collect::<Vec<_>>();
    let targets = Arc::new(targets);
    sessions
        .iter()
        .enumerate()
        .map(|(i, session)| {
            let (session, record, stop, targets) = (session.clone(), record.clone(), stop.clone(), targets.clone());
            let client = crate::session::client(env, REQUEST_TIMEOUT);
            let think = env.think;
            tokio::spawn(async move {
                let http = client.expect("an HTTPS client");
                let mut rng = StdRng::seed_from_u64(0x4841_0000 + i as u64);
                let mut payments = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let (mut p, to_number) = next_payment(&mut rng, i, &session, &targets);
                    pay(&http, &session, &record, &mut p, &to_number).await;
                    payments.push(p);
                    if payments.len() % READ_EVERY == 0 {
                        read_accounts(&http, &session, &record).await;
                    }
                    tokio::time::sleep(think).await;
                }
                payments
            })
        })
        .collect()
}

/// Starts the reader: `GET /v1/accounts` of each customer in turn until `stop` is set (reads
/// are what nginx may retry on another replica by itself).
pub fn start_reader(
    env: &Env,
    sessions: &[Session],
    record: Arc<Record>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let sessions = sessions.to_vec();
    let client = crate::session::client(env, REQUEST_TIMEOUT);
    tokio::spawn(async move {
        let http = client.expect("an HTTPS client");
        for session in sessions.iter().cycle() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            read_accounts(&http, session, &record).await;
            tokio::time::sleep(READER_PAUSE).await;
        }
    })
}

/// A new payment of `session`'s customer, and the number of the account it goes to: from one
/// of their accounts to their other one, or to any account of another customer.
fn next_payment(
    rng: &mut StdRng,
    payer: usize,
    session: &Session,
    targets: &[(AccountId, String)],
) -> (Payment, String) {
    let own = session.customer.accounts;
    let from_index = rng.random_range(0..own.len());
    let own_other = own[1 - from_index];
    let (to, to_number) = if rng.random_bool(0.5) {
        targets.iter().find(|(id, _)| *id == own_other).cloned().expect("the customer's accounts are targets")
    } else {
        loop {
            let target = &targets[rng.random_range(0..targets.len())];
            if !own.contains(&target.0) {
                break target.clone();
            }
        }
    };
    let payment = Payment {
        payer,
        key: uuid::Uuid::now_v7().to_string(),
        from: own[from_index],
        to,
        amount_minor: rng.random_range(1..=AMOUNT_MINOR_MAX),
        attempts: 0,
        ended: Ended::GaveUp("never sent".to_owned()),
        ended_at: None,
    };
    (payment, to_number)
}

/// Sends `p` until it is answered or given up; records every attempt.
async fn pay(http: &reqwest::Client, session: &Session, record: &Record, p: &mut Payment, to_number: &str) {
    let body = serde_json::json!({
        "from_account": p.from,
        "to_account_number": to_number,
        "amount": { "amount": Money::new(p.amount_minor, Currency::EUR).to_decimal_string(), "currency": "EUR" },
    });
    let first = Instant::now();
    let mut pause = RETRY_PAUSE_FIRST;
    loop {
        p.attempts += 1;
        let at = Instant::now();
        let sent = session.request(http, Method::POST, "/v1/transfers").header("idempotency-key", &p.key).json(&body);
        let (outcome, text) = outcome_of(sent.send().await).await;
        record.push(Attempt { at, took: at.elapsed(), what: "POST /v1/transfers", outcome: outcome.clone() });
        p.ended_at = Some(Instant::now());
        match outcome {
            Outcome::Status { code: 201, .. } => {
                p.ended = match serde_json::from_str::<TransferResponse>(&text) {
                    Ok(r) => Ended::Acknowledged {
                        transfer: r.transfer.id.to_string(),
                        state: format!("{:?}", r.transfer.state).to_lowercase(),
                    },
                    Err(e) => Ended::Refused { status: 201, body: format!("not a transfer response ({e}): {text}") },
                };
                return;
            }
            Outcome::Status { code, .. } if !matches!(code, 502..=504) => {
                p.ended = Ended::Refused { status: code, body: text };
                return;
            }
            _ if first.elapsed() >= RETRY_FOR => {
                p.ended = Ended::GaveUp(format!("{outcome:?}"));
                return;
            }
            _ => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
        }
    }
}

/// `GET /v1/accounts`, recorded (nginx may retry a read on another replica by itself).
async fn read_accounts(http: &reqwest::Client, session: &Session, record: &Record) {
    let at = Instant::now();
    let (outcome, _) = outcome_of(session.request(http, Method::GET, "/v1/accounts").send().await).await;
    record.push(Attempt { at, took: at.elapsed(), what: "GET /v1/accounts", outcome });
}

/// The outcome of a sent request, and its body.
pub async fn outcome_of(sent: Result<reqwest::Response, reqwest::Error>) -> (Outcome, String) {
    match sent {
        Ok(r) => {
            let code = r.status().as_u16();
            let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            match r.text().await {
                Ok(text) => (Outcome::Status { code, problem: kind == "application/problem+json" }, text),
                Err(e) => (Outcome::Network(format!("reading the body of a {code}: {e}")), String::new()),
            }
        }
        Err(e) => (Outcome::Network(error_chain(&e)), String::new()),
    }
}

/// An error with its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
