//! The event-stream clients: one per customer, following all of the customer's accounts through
//! nginx (`GET /v1/events` with the DPoP-bound token), from the cursor of the balances read
//! after the sign-in (`v1.<seq>.<seq>`). When a stream ends or breaks (its replica was killed)
//! or does not open, the client opens another with `Last-Event-ID`: the `id:` of the last
//! message it handled. It keeps every ledger event it received, in order, for the checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bp_core::event::Event;
use bp_core::ids::AccountId;
use reqwest::Method;

use crate::session::Session;
use crate::{Attempt, Env, Record};

/// A stream that sends nothing this long (not even its heartbeat, every 15 s) is given up and
/// opened again.
const SILENCE_MAX: Duration = Duration::from_secs(40);
/// The pause before opening a stream again.
const REOPEN_PAUSE: Duration = Duration::from_millis(250);
/// How long the end of the run waits for the streams to deliver every event committed.
const CATCH_UP_MAX: Duration = Duration::from_secs(60);

/// What one customer's stream client received.
#[derive(Clone, Debug, Default)]
pub struct Followed {
    /// The sequence number each account's stream started after.
    pub start: BTreeMap<AccountId, u64>,
    /// The ledger events received, per account, in the order received.
    pub events: BTreeMap<AccountId, Vec<Event>>,
    /// The cursor of the last message handled.
    pub cursor: String,
    /// Streams opened (the first included), and openings refused or failed.
    pub opened: u32,
    pub open_failures: u32,
    /// Streams that ended or broke while the client followed them.
    pub broken: u32,
    /// Messages that were neither a ledger event nor a security event.
    pub malformed: Vec<String>,
}

/// A running stream client.
#[derive(Debug)]
pub struct Follower {
    pub state: Arc<Mutex<Followed>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(state: &Mutex<Followed>) -> std::sync::MutexGuard<'_, Followed> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts one stream client per session, after the accounts each session read.
pub async fn start_all(env: &Env, sessions: &[Session], record: Arc<Record>) -> Result<Vec<Follower>, String> {
    let mut followers = Vec::new();
    for session in sessions {
        // Without a whole-request timeout: a stream lasts as long as the run.
        let http = crate::session::client_for_streams(env)?;
        let listed = &session.accounts.accounts;
        let cursor = format!("v1{}", listed.iter().map(|a| format!(".{}", a.last_event_seq)).collect::<String>());
        let state = Arc::new(Mutex::new(Followed {
            start: listed.iter().map(|a| (a.id, a.last_event_seq)).collect(),
            cursor,
            ..Followed::default()
        }));
        let task = tokio::spawn(follow(http, session.clone(), state.clone(), record.clone()));
        followers.push(Follower { state, task });
    }
    Ok(followers)
}

/// Follows the stream until the task is aborted, opening it again whenever it ends.
async fn follow(http: reqwest::Client, session: Session, state: Arc<Mutex<Followed>>, record: Arc<Record>) {
    loop {
        let cursor = lock(&state).cursor.clone();
        let at = Instant::now();
        let request = session.request(&http, Method::GET, "/v1/events").header("last-event-id", &cursor);
        match request.send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => {
                record.push(Attempt { at, took: at.elapsed(), what: "GET /v1/events", outcome: status(&r) });
                lock(&state).opened += 1;
                read(r, &state).await;
                lock(&state).broken += 1;
            }
            sent => {
                let (outcome, _) = crate::pay::outcome_of(sent).await;
                record.push(Attempt { at, took: at.elapsed(), what: "GET /v1/events", outcome });
                lock(&state).open_failures += 1;
            }
        }
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}

fn status(r: &reqwest::Response) -> crate::Outcome {
    crate::Outcome::Status { code: r.status().as_u16(), problem: false }
}

/// Reads messages of one stream until it ends, breaks or stays silent too long.
async fn read(mut r: reqwest::Response, state: &Mutex<Followed>) {
    let mut buffer = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(SILENCE_MAX, r.chunk()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            handle(&block, state);
        }
    }
}

/// One message: a ledger event is kept; every message with an id moves the cursor.
fn handle(block: &str, state: &Mutex<Followed>) {
    let (mut id, mut event, mut data) = (None, "", String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v;
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    let mut s = lock(state);
    if !event.is_empty() && !event.starts_with("security.") {
        match serde_json::from_str::<Event>(&data) {
            Ok(e) => s.events.entry(e.account_id).or_default().push(e),
            Err(e) => s.malformed.push(format!("{event} ({e}): {data}")),
        }
    }
    if let Some(id) = id {
        s.cursor = id;
    }
}

/// Waits until every stream client has received every event of its accounts committed so far
/// (the last sequence numbers the API lists now, through nginx), or `CATCH_UP_MAX`; then stops
/// them and returns what each received.
pub async fn finish(env: &Env, sessions: &[Session], followers: Vec<Follower>) -> Vec<Followed> {
    let http = crate::session::client(env, Duration::from_secs(20)).expect("an HTTPS client");
    let deadline = Instant::now() + CATCH_UP_MAX;
    for (session, follower) in sessions.iter().zip(&followers) {
        let Ok(now) = session.accounts(&http).await else { continue };
        while Instant::now() < deadline {
            let got = lock(&follower.state).clone();
            let behind = now.accounts.iter().any(|a| {
                let last = got.events.get(&a.id).and_then(|e| e.last()).map_or(got.start[&a.id], |e| e.seq);
                last < a.last_event_seq
            });
            if !behind {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    followers
        .into_iter()
        .map(|f| {
            f.task.abort();
            lock(&f.state).clone()
        })
        .collect()
}
