//! Server-Sent Events: `GET /v1/events` streams the signed-in customer's own accounts' events.
//!
//! Browsers' `EventSource` cannot send an `Authorization` header, so a client first exchanges
//! its access token for a **stream ticket** (`POST /v1/events/ticket`): 256 random bits, kept
//! hashed in memory, single-use, valid 30 s, bound to the customer and the session. `GET
//! /v1/events?ticket=…` spends it; clients that can send headers may use their bearer token
//! instead. A stream ends when its session is revoked (sign-out, refresh token reuse).
//!
//! A stream carries the ledger events of the customer's accounts and the customer's security
//! events (audit log entries naming them, `security.<kind>`). Each event's SSE `id` is a cursor
//! naming the audit position and the last sequence number of every account delivered
//! (`v2.<audit>.<seq>.<seq>…`, accounts in opening order). A client that reconnects with
//! `Last-Event-ID` receives every later event, replayed from the store, then the live ones — with
//! no gap and no duplicate (the [`Sequencer`] drops what was delivered and fills gaps from the
//! store). Comments every `bus.stream_heartbeat_s` (15 s) keep idle connections open through
//! proxies.
//!
//! **Fan-out.** One task, the [`bridge`], subscribes to the bus (in-process or Kafka) and puts
//! each event, its SSE lines made once, on this process's [`Hub`], which routes it to its
//! customer's ring (`bus.stream_buffer_events` events, shared by that customer's streams): a
//! stream wakes only for its customer's events. Each stream is the response body itself, reading
//! the ring when the connection can take more: no task, no queue of its own per client. A client
//! that falls a whole ring behind is disconnected (it resumes from its cursor); no other client
//! waits for it.

pub mod pump;
pub mod stream_conn;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bp_core::bus::EventBus;
use bp_core::event::Event;
use bp_core::ids::SessionId;
use bp_core::ids::{AccountId, CustomerId};
use bp_core::security::{AuditEntry, AuditKind};
use bp_notify::sequencer::{Sequencer, Verdict};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::auth::crypto::{random_token, sha256};
use crate::auth::{Auth, authenticate};
use crate::events::pump::{Attached, PumpHandle, Pumped};
use crate::http::problem::ApiError;
use crate::state::AppState;

/// The comment an idle stream sends every `bus.stream_heartbeat_s`.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// How long a stream ticket is valid.
pub const TICKET_TTL_S: i64 = 30;
/// Unspent tickets kept at most.
const TICKETS_MAX: usize = 100_000;

/// Unspent stream tickets, by hash.
#[derive(Debug, Default)]
pub struct Streams {
    map: Mutex<HashMap<[u8; 32], Ticketed>>,
}

/// Whose a ticket is, and until when.
#[derive(Debug)]
struct Ticketed {
    customer: CustomerId,
    session: Option<SessionId>,
    until: bp_core::Timestamp,
    /// When the authority the ticket was made with ends: its stream's too.
    authority_until: bp_core::Timestamp,
}

/// When the authority of `caller` ends without a new sign-in: for one of our sessions, the
/// session's end (a revocation ends it before); for an external issuer's token, whose revocation
/// we cannot see, the token's expiry. A stream lasts no longer than the authority it was opened
/// with.
fn authority_until(state: &AppState, caller: &crate::auth::tokens::Caller) -> bp_core::Timestamp {
    let at = |s: u64| {
        chrono::DateTime::from_timestamp(i64::try_from(s).unwrap_or(i64::MAX), 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    };
    match (caller.session, caller.auth_time) {
        (Some(_), Some(signed_in)) => state.auth.session_end(at(signed_in)),
        _ => at(caller.exp),
    }
}

/// An event on its way to the streams, with its SSE lines made once for all of them.
#[derive(Debug)]
pub struct Outgoing {
    /// What happened.
    pub what: What,
    /// `event: <type>` and `data: <JSON>`, each with its newline: the frame but for its `id`,
    /// which is each stream's own.
    pub head: Bytes,
}

/// The two sources of a customer's events.
#[derive(Debug)]
pub enum What {
    /// A ledger event of an account.
    Ledger(Event),
    /// An entry of the audit log naming the customer: SSE type `security.<kind>`.
    Security(AuditEntry),
}

impl Outgoing {
    fn new(what: What, type_name: &str, json: &str) -> Arc<Self> {
        let head = format!("event: {type_name}\ndata: {json}\n");
        Arc::new(Self { what, head: head.into() })
    }

    fn ledger(event: Event) -> Option<Arc<Self>> {
        let json = serde_json::to_string(&event).ok()?;
        let type_name = event.body.type_name();
        Some(Self::new(What::Ledger(event), type_name, &json))
    }

    fn security(entry: AuditEntry) -> Option<Arc<Self>> {
        let kind = serde_json::to_value(entry.kind).ok()?;
        let type_name = format!("security.{}", kind.as_str()?);
        let json = serde_json::json!({
            "type": type_name,
            "position": entry.position,
            "at": entry.at,
            "kind": kind,
            "detail": entry.detail,
        });
        Some(Self::new(What::Security(entry), &type_name, &json.to_string()))
    }
}

/// This process's fan-out of events to its streams, routed by customer: a stream wakes only for
/// its own customer's events. Each customer with open streams has a broadcast ring of
/// `bus.stream_buffer_events`, shared by that customer's streams.
#[derive(Debug)]
pub struct Hub {
    capacity: usize,
    routes: std::sync::RwLock<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    /// Each customer with open streams.
    customers: HashMap<CustomerId, Group>,
    /// Account → its customer, for the accounts of open streams.
    accounts: HashMap<AccountId, CustomerId>,
    /// The server is shutting down: no ring any more, and none made.
    closed: bool,
}

/// One customer's open streams.
#[derive(Debug)]
struct Group {
    ring: broadcast::Sender<Arc<Outgoing>>,
    /// The accounts the streams follow.
    followed: Vec<AccountId>,
    /// The pumps writing the customer's live streams on connections of their own; each is rung
    /// at every event of the customer.
    pumps: Vec<PumpHandle>,
}

impl Hub {
    /// A hub whose per-customer rings hold `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), routes: std::sync::RwLock::default() }
    }

    /// The events a ring really holds (its capacity rounded up to a power of two).
    pub fn ring_len(&self) -> usize {
        self.capacity.next_power_of_two()
    }

    /// A receiver of `customer`'s events: the security events naming them and the ledger events
    /// of `accounts` (and of the accounts of the customer's other open streams).
    pub fn subscribe(&self, customer: CustomerId, accounts: &[AccountId]) -> broadcast::Receiver<Arc<Outgoing>> {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if routes.closed {
            // A receiver whose sender is gone: its stream ends at once.
            return broadcast::channel(1).1;
        }
        let Routes { customers, accounts: index, .. } = &mut *routes;
        let group = customers.entry(customer).or_insert_with(|| Group {
            ring: broadcast::channel(self.capacity).0,
            followed: Vec::new(),
            pumps: Vec::new(),
        });
        for a in accounts {
            if !group.followed.contains(a) {
                group.followed.push(*a);
                index.insert(*a, customer);
            }
        }
        group.ring.subscribe()
    }

    /// Hands `stream`, live and with nothing to send, to one of its customer's pumps (one with
    /// room, or a new one), which writes its messages from now on. Gives it back when the hub is
    /// closed.
    pub fn attach(&self, stream: Attached) -> Result<Pumped, Attached> {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if routes.closed {
            return Err(stream);
        }
        let Some(group) = routes.customers.get_mut(&stream.customer()) else { return Err(stream) };
        // A pump stops only with its group, unless it panicked: then it is replaced.
        group.pumps.retain(PumpHandle::running);
        match group.pumps.iter().find(|p| p.has_room()) {
            Some(pump) => pump.attach(stream),
            None => {
                let pump = PumpHandle::spawn();
                let pumped = pump.attach(stream);
                group.pumps.push(pump);
                pumped
            }
        }
    }

    /// Forgets `customer`'s ring when it has no receivers but the `own` ones about to be dropped
    /// (the caller's).
    fn release(&self, customer: CustomerId, own: usize) {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let last = routes.customers.get(&customer).is_some_and(|g| g.ring.receiver_count() <= own);
        if last {
            if let Some(group) = routes.customers.remove(&customer) {
                for a in group.followed {
                    routes.accounts.remove(&a);
                }
            }
        }
    }

    /// How many streams of `customer` are open (receivers of their ring).
    pub fn open_streams(&self, customer: CustomerId) -> usize {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes.customers.get(&customer).map_or(0, |g| g.ring.receiver_count())
    }

    /// Whether [`Hub::close`] was called: the server is shutting down.
    pub fn closed(&self) -> bool {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).closed
    }

    /// Ends every stream (at shutdown): each ring is dropped, so that its streams end once they
    /// have sent what it still holds; streams opened later end at once.
    pub fn close(&self) {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        routes.closed = true;
        // The rings close as they are dropped; the pumps, rung, find them closed and give their
        // streams back to end.
        let pumps: Vec<PumpHandle> = routes.customers.drain().flat_map(|(_, g)| g.pumps).collect();
        for p in pumps {
            p.ring();
        }
        routes.accounts.clear();
    }

    /// Sends `out` to its customer's streams, if any are open.
    fn publish(&self, out: Arc<Outgoing>) {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let customer = match &out.what {
            What::Ledger(e) => routes.accounts.get(&e.account_id).copied(),
            What::Security(e) => e.customer_id,
        };
        let Some(customer) = customer else { return };
        let abandoned = routes.customers.get(&customer).is_some_and(|g| {
            let abandoned = g.ring.send(out).is_err();
            for p in &g.pumps {
                p.ring();
            }
            abandoned
        });
        drop(routes);
        if abandoned {
            // Its last stream went away without releasing it (it never started).
            self.release(customer, 0);
        }
    }
}

/// A stream ticket.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` to `/v1/events`, once, within `expires_in` seconds.
    pub ticket: String,
    /// Seconds.
    pub expires_in: i64,
}

/// `POST /v1/events/ticket`.
pub async fn ticket(State(state): State<Arc<AppState>>, auth: Auth) -> Result<axum::Json<Ticket>, ApiError> {
    auth.require("accounts")?;
    let token = random_token(32);
    let now = state.now();
    let mut map = state.streams.map.lock().unwrap_or_else(PoisonError::into_inner);
    map.retain(|_, t| t.until > now);
    if map.len() >= TICKETS_MAX {
        return Err(ApiError::RateLimited { retry_after_s: 5 });
    }
    let ticketed = Ticketed {
        customer: auth.0.customer_id,
        session: auth.0.session,
        until: now + chrono::Duration::seconds(TICKET_TTL_S),
        authority_until: authority_until(&state, &auth.0),
    };
    map.insert(sha256(token.as_bytes()), ticketed);
    Ok(axum::Json(Ticket { ticket: token, expires_in: TICKET_TTL_S }))
}

/// The query of `/v1/events`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    ticket: Option<String>,
    /// For clients that cannot set `Last-Event-ID`.
    last_event_id: Option<String>,
}

/// A stream cursor, `v2.<audit>.<seq>.<seq>…`: the audit log position of the last security event
/// delivered, then the last sequence number delivered per account, in the stream's account order.
fn write_cursor(out: &mut Vec<u8>, audit: u64, positions: &[u64]) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "v2.{audit}");
    for p in positions {
        let _ = write!(out, ".{p}");
    }
}

/// The audit position and per-account sequence numbers of a cursor (`None` for the audit
/// position of a `v1` cursor, which had none).
fn parse_cursor(id: &str, accounts: &[AccountId]) -> Option<(Option<u64>, Vec<u64>)> {
    let mut parts = id.trim().split('.');
    let audit = match parts.next()? {
        "v1" => None,
        "v2" => Some(parts.next()?.parse().ok()?),
        _ => return None,
    };
    let seqs: Vec<u64> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    // Accounts opened since the cursor was made start from the beginning.
    (seqs.len() <= accounts.len())
        .then(|| (audit, accounts.iter().enumerate().map(|(i, _)| seqs.get(i).copied().unwrap_or(0)).collect()))
}

/// `GET /v1/events`.
pub async fn stream(State(state): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<StreamQuery>) -> Response {
    match open(&state, &headers, &q).await {
        Ok(sse) => sse,
        Err(e) => e.into_response(),
    }
}

async fn open(state: &Arc<AppState>, headers: &HeaderMap, q: &StreamQuery) -> Result<Response, ApiError> {
    let (customer, session, authority_until) = match (&q.ticket, headers.get(axum::http::header::AUTHORIZATION)) {
        (Some(t), _) => {
            let spent = state.streams.map.lock().unwrap_or_else(PoisonError::into_inner).remove(&sha256(t.as_bytes()));
            match spent {
                Some(t) if t.until > state.now() && !state.auth.verifier.is_revoked(t.session) => {
                    (t.customer, t.session, t.authority_until)
                }
                _ => return Err(ApiError::Unauthorized("unknown, used or expired stream ticket")),
            }
        }
        (None, Some(value)) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .ok_or(ApiError::Unauthorized("malformed authorization"))?;
            let caller = authenticate(&state.auth, token.trim()).await?;
            if !caller.has_scope("accounts") {
                return Err(ApiError::Forbidden("the access token lacks the 'accounts' scope"));
            }
            (caller.customer_id, caller.session, authority_until(state, &caller))
        }
        (None, None) => return Err(ApiError::Unauthorized("a stream ticket or a bearer token is required")),
    };
    let mut accounts: Vec<_> = state.ledger.accounts_of(customer).await?;
    // In opening order: accounts opened after a cursor was made come after the ones it names.
    accounts.sort_by_key(|a| (a.opened_at, a.id));
    let ids: Vec<AccountId> = accounts.iter().map(|a| a.id).collect();
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| q.last_event_id.clone());
    // Security events from the audit log's end as this process has read it (or the cursor's).
    let audit_now = state.audit_position.load(std::sync::atomic::Ordering::Acquire);
    let (audit, start) = match last_event_id {
        Some(id) => {
            let (audit, seqs) = parse_cursor(&id, &ids)
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID is not a cursor of this stream".into()))?;
            (audit.unwrap_or(audit_now), seqs)
        }
        None => (audit_now, accounts.iter().map(|a| a.last_event_seq).collect()),
    };
    if state.hub.closed() {
        return Err(ApiError::Unavailable);
    }
    // Subscribed before the catch-up reads the store: what was committed before is in the store,
    // what is committed after comes live (the sequencer drops what comes both ways).
    let live = state.hub.subscribe(customer, &ids);
    let lasts = (authority_until - state.now()).to_std().unwrap_or(Duration::ZERO);
    let stream = ClientStream::new(Arc::clone(state), (customer, session), ids, (audit, start), live)
        .until(tokio::time::Instant::now() + lasts);
    let handoff = Handoff(Arc::new(Mutex::new(Some(stream))));
    let chunks = futures_util::stream::unfold((handoff.clone(), None), |(handoff, stream)| async move {
        let mut stream: ClientStream = match stream {
            Some(s) => s,
            None => handoff.take()?,
        };
        let message = stream.next_frame().await?;
        Some((Ok::<_, Infallible>(message), (handoff, Some(stream))))
    });
    let headers =
        [(axum::http::header::CONTENT_TYPE, "text/event-stream"), (axum::http::header::CACHE_CONTROL, "no-cache")];
    let mut response = (headers, Body::from_stream(chunks)).into_response();
    response.extensions_mut().insert(handoff);
    Ok(response)
}

/// What a stream can do next without waiting ([`ClientStream::try_next_frame`]).
#[derive(Debug)]
pub enum Step {
    /// A message to send now.
    Frame(Bytes),
    /// Nothing to send until its customer's next event arrives on the ring.
    Idle,
    /// Work that waits for the store, or the end of the stream: [`ClientStream::settle`].
    Settle,
}

/// A stream on its way out of the handler, for whichever transport takes it first: a
/// connection of its own ([`crate::events::stream_conn`]) takes it whole from the response's extensions,
/// to be written by the [`pump`]s; otherwise the response body (hyper) takes it at
/// its first poll.
#[derive(Debug, Clone)]
pub struct Handoff(Arc<Mutex<Option<ClientStream>>>);

impl Handoff {
    /// The stream, unless the other side took it already.
    pub fn take(&self) -> Option<ClientStream> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// One client's stream: first its accounts' events from the store after its cursor and its
/// security events from the audit log, then the live ones from the hub (ledger events through
/// the sequencer).
#[derive(Debug)]
pub struct ClientStream {
    state: Arc<AppState>,
    customer: CustomerId,
    /// The session the stream was opened in: its revocation ends the stream.
    session: Option<SessionId>,
    /// The session was revoked: end once what is ready is sent.
    ending: bool,
    /// The ring said the stream is over (a whole ring behind, or shutdown): end once what is
    /// ready is sent.
    ended: bool,
    /// A live event that showed a gap, waiting for [`ClientStream::settle`] to fill it from the
    /// store.
    held: Option<Event>,
    /// The audit position of the last security event delivered (or of the stream's start).
    audit: u64,
    /// Still to read the audit log after the ledger catch-up.
    audit_catching_up: bool,
    /// The end of the audit page read last, once its entries of this customer are sent.
    audit_skip: u64,
    ids: Vec<AccountId>,
    positions: Vec<u64>,
    seq: Sequencer,
    /// Still reading the store: the index of the account being read.
    catching_up: Option<usize>,
    ready: std::collections::VecDeque<Arc<Outgoing>>,
    /// The customer's ring; closed by [`Hub::close`] at shutdown, which ends the stream.
    live: broadcast::Receiver<Arc<Outgoing>>,
    /// Wakes the stream to check whether a heartbeat is due.
    heartbeat: std::pin::Pin<Box<tokio::time::Sleep>>,
    heartbeat_every: Duration,
    /// When the authority the stream was opened with ends, and the stream with it.
    deadline: Option<tokio::time::Instant>,
    /// When the last message was sent: a heartbeat is due `heartbeat_every` after it. (Kept
    /// here rather than moving the timer at every message: a timer moved per message and
    /// stream is a lock of the timer wheel per delivery.)
    last_sent: tokio::time::Instant,
}

impl ClientStream {
    /// A stream, for `customer` signed in with `session`, of their accounts `ids` (in cursor
    /// order) from `start`: the audit position and the sequence number per account; reading
    /// `live` after the stores.
    pub fn new(
        state: Arc<AppState>,
        (customer, session): (CustomerId, Option<SessionId>),
        ids: Vec<AccountId>,
        (audit, start): (u64, Vec<u64>),
        live: broadcast::Receiver<Arc<Outgoing>>,
    ) -> Self {
        let mut seq = Sequencer::new();
        for (a, s) in ids.iter().zip(&start) {
            seq.start_at(*a, *s);
        }
        metrics::gauge!("bp_sse_clients").increment(1.0);
        let heartbeat_every = Duration::from_secs(state.config.bus.stream_heartbeat_s);
        Self {
            state,
            customer,
            session,
            ending: false,
            ended: false,
            held: None,
            audit,
            audit_catching_up: true,
            audit_skip: 0,
            catching_up: Some(0),
            ids,
            positions: start,
            seq,
            ready: std::collections::VecDeque::new(),
            live,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat_every)),
            heartbeat_every,
            deadline: None,
            last_sent: tokio::time::Instant::now(),
        }
    }

    /// The stream ends at `deadline` (after what is ready then is sent): when the authority it
    /// was opened with ends.
    pub fn until(mut self, deadline: tokio::time::Instant) -> Self {
        self.deadline = Some(deadline);
        let wake = self.wake_at(self.last_sent + self.heartbeat_every);
        self.heartbeat.as_mut().reset(wake);
        self
    }

    /// When the stream ends by itself, if it does.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// Ends the stream once what is ready is sent (its deadline came): from now on
    /// [`try_next_frame`](Self::try_next_frame) says [`Step::Settle`] when nothing is ready, and
    /// [`settle`](Self::settle) ends it.
    pub fn finish(&mut self) {
        self.ending = true;
    }

    /// `at`, or the deadline if that comes first.
    fn wake_at(&self, at: tokio::time::Instant) -> tokio::time::Instant {
        self.deadline.map_or(at, |d| d.min(at))
    }

    /// Whether the deadline has passed at `now`.
    fn expired(&self, now: tokio::time::Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    /// What the stream can do now without waiting: a message ready to send, nothing until its
    /// customer's next event ([`Step::Idle`]), or work that waits for the store or ends the stream
    /// ([`Step::Settle`]: call [`ClientStream::settle`]). Never blocks: the [`pump`]
    /// drives live streams with it, many per task.
    pub fn try_next_frame(&mut self) -> Step {
        loop {
            if let Some(out) = self.ready.pop_front() {
                return Step::Frame(self.frame(&out));
            }
            if self.ending || self.ended || self.held.is_some() || self.catching_up.is_some() || self.audit_catching_up
            {
                return Step::Settle;
            }
            match self.live.try_recv() {
                Ok(out) => self.take(out),
                Err(broadcast::error::TryRecvError::Empty) => return Step::Idle,
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.lagged();
                    return Step::Settle;
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.ended = true;
                    return Step::Settle;
                }
            }
        }
    }

    /// Does the work [`Step::Settle`] stands for: one page of the store or the audit log while
    /// catching up, or filling a gap from the store. `false` when the stream ends instead (its
    /// session revoked, a whole ring behind, shutdown, or a store failure: the client resumes
    /// from its cursor).
    pub async fn settle(&mut self) -> bool {
        if self.ending || self.ended || self.expired(tokio::time::Instant::now()) {
            return false;
        }
        if let Some(event) = self.held.take() {
            return self.admit_owned(event).await.is_some();
        }
        if let Some(i) = self.catching_up {
            let Some(&account) = self.ids.get(i) else {
                self.catching_up = None;
                return true;
            };
            let after = self.seq.last(account).unwrap_or(0);
            let Ok(page) = self.state.ledger.store().events_after(account, after, 500).await else { return false };
            if page.is_empty() {
                self.catching_up = Some(i + 1);
            }
            for e in page {
                if self.admit_owned(e).await.is_none() {
                    return false;
                }
            }
            return true;
        }
        if self.audit_catching_up {
            let Ok(page) = self.state.security.audit_after(self.audit, 500).await else { return false };
            let Some(last) = page.last().map(|e| e.position) else {
                self.audit_catching_up = false;
                return true;
            };
            let customer = Some(self.customer);
            for e in page.into_iter().filter(|e| e.customer_id == customer) {
                self.note_revocation(&e);
                let Some(out) = Outgoing::security(e) else { return false };
                self.ready.push_back(out);
            }
            // Past other customers' entries too, once this customer's are sent (the cursor
            // names only what was delivered).
            if self.ready.is_empty() {
                self.audit = last;
            } else {
                self.audit_skip = last;
            }
        }
        true
    }

    /// The next SSE message, or `None` when the stream ends (client too slow, shutdown, or a
    /// store failure: the client resumes from its cursor). Waits for live events, sending a
    /// heartbeat comment when the stream has been idle for `bus.stream_heartbeat_s`.
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            match self.try_next_frame() {
                Step::Frame(message) => {
                    self.last_sent = tokio::time::Instant::now();
                    return Some(message);
                }
                Step::Settle => {
                    if !self.settle().await {
                        return None;
                    }
                }
                Step::Idle => {
                    let out = tokio::select! {
                        () = self.heartbeat.as_mut() => {
                            let now = tokio::time::Instant::now();
                            if self.expired(now) {
                                return None;
                            }
                            let due = self.last_sent + self.heartbeat_every;
                            if now < due {
                                // A message went out since the timer was set: wait until it is due.
                                let wake = self.wake_at(due);
                                self.heartbeat.as_mut().reset(wake);
                                continue;
                            }
                            self.last_sent = now;
                            let wake = self.wake_at(now + self.heartbeat_every);
                            self.heartbeat.as_mut().reset(wake);
                            return Some(Bytes::from_static(HEARTBEAT));
                        }
                        next = self.live.recv() => match next {
                            Ok(out) => out,
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                self.lagged();
                                return None;
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                    };
                    self.take(out);
                }
            }
        }
    }

    /// A live event from the ring: queued when it is this stream's and new, dropped when it was
    /// delivered already, held for [`ClientStream::settle`] when it shows a gap.
    fn take(&mut self, out: Arc<Outgoing>) {
        match &out.what {
            What::Security(e) => {
                if e.customer_id == Some(self.customer) && e.position > self.audit {
                    self.note_revocation(e);
                    self.ready.push_back(out);
                }
            }
            What::Ledger(e) if self.ids.contains(&e.account_id) => match self.seq.check(e.account_id, e.seq) {
                Verdict::Next => self.ready.push_back(out),
                Verdict::Seen => {}
                Verdict::Gap { .. } => self.held = Some(e.clone()),
            },
            What::Ledger(_) => {}
        }
    }

    /// A whole ring behind: the stream ends (the client resumes from its cursor).
    fn lagged(&mut self) {
        metrics::counter!("bp_sse_slow_clients_total").increment(1);
        self.ended = true;
    }

    /// Whether the stream is a whole ring behind, which ends it as its next read of the ring
    /// would: for a transport whose write waits for a client that reads nothing.
    pub fn fell_behind(&mut self) -> bool {
        let behind = self.live.len() > self.state.hub.ring_len();
        if behind {
            self.lagged();
        }
        behind
    }

    /// Whose stream this is.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }

    /// The server's state the stream reads.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// When the last message or heartbeat went out.
    pub fn last_sent(&self) -> tokio::time::Instant {
        self.last_sent
    }

    /// Notes that a message or heartbeat went out `at` (sent by someone other than
    /// [`ClientStream::next_frame`]).
    pub fn sent(&mut self, at: tokio::time::Instant) {
        self.last_sent = at;
    }

    /// How long the stream may stay silent before a heartbeat comment.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_every
    }

    /// Ends the stream (after sending what is ready) when `e` revokes its session.
    fn note_revocation(&mut self, e: &AuditEntry) {
        let revokes = matches!(e.kind, AuditKind::SessionRevoked | AuditKind::RefreshTokenReuse);
        if revokes
            && self.session.is_some_and(|s| e.detail.get("session").and_then(|v| v.as_str()) == Some(&s.to_string()))
        {
            self.ending = true;
        }
    }

    /// Passes an event read from the store (or after a gap) through the sequencer.
    async fn admit_owned(&mut self, event: Event) -> Option<()> {
        for e in self.seq.admit(event, self.state.ledger.store().as_ref()).await.ok()? {
            self.ready.push_back(Outgoing::ledger(e)?);
        }
        Some(())
    }

    /// The SSE message of `out`; its id says exactly what was delivered up to and including it.
    fn frame(&mut self, out: &Outgoing) -> Bytes {
        match &out.what {
            What::Ledger(e) => {
                if let Some(i) = self.ids.iter().position(|a| *a == e.account_id) {
                    self.positions[i] = e.seq;
                }
            }
            What::Security(e) => self.audit = self.audit.max(e.position),
        }
        if self.ready.is_empty() && self.audit_skip > self.audit {
            self.audit = self.audit_skip;
        }
        // One allocation per message and stream: the event's shared lines, then the stream's
        // own `id:` line. (One buffer, so one frame of the body per message.)
        let mut message = Vec::with_capacity(out.head.len() + 32 + 21 * self.positions.len());
        message.extend_from_slice(&out.head);
        message.extend_from_slice(b"id: ");
        write_cursor(&mut message, self.audit, &self.positions);
        message.extend_from_slice(b"\n\n");
        Bytes::from(message)
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.state.hub.release(self.customer, 1);
        metrics::gauge!("bp_sse_clients").decrement(1.0);
    }
}

/// The configured external bus (Kafka), connected; `None` for the in-process bus.
pub async fn connect_bus(config: &crate::config::BusConfig) -> Result<Option<Arc<dyn EventBus>>, String> {
    match config.kind {
        crate::config::BusKind::InProcess => Ok(None),
        #[cfg(feature = "kafka")]
        crate::config::BusKind::Kafka => {
            let bus = bp_notify::kafka::KafkaBus::connect(config.kafka.clone())
                .await
                .map_err(|e| format!("connecting the event bus: {e}"))?;
            Ok(Some(Arc::new(bus)))
        }
        #[cfg(not(feature = "kafka"))]
        crate::config::BusKind::Kafka => Err("bus.kind = \"kafka\" needs the `kafka` feature".into()),
    }
}

/// Forwards every event of the bus to this process's hub, its JSON made once. Subscribes first
/// (retrying with back-off while the bus is unreachable), then says so on `subscribed`: the
/// relay starts only then, so that this process misses none of its own events.
pub async fn bridge(state: Arc<AppState>, subscribed: tokio::sync::oneshot::Sender<()>) {
    let mut wait = Duration::from_millis(100);
    let mut subscription = loop {
        match state.bus.subscribe().await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "subscribing to the event bus failed");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    let _ = subscribed.send(());
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match subscription.next().await {
            Some(Ok(event)) => {
                if let Some(out) = Outgoing::ledger(event) {
                    // No stream open is not an error.
                    state.hub.publish(out);
                }
            }
            // The bridge fell behind the in-process bus, or Kafka is unreachable for a moment
            // (the adapter reconnects by itself). Streams that miss an event fill the gap from
            // the store when the account's next event arrives.
            Some(Err(e)) => {
                metrics::counter!("bp_bus_receive_errors_total").increment(1);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "receiving from the event bus failed");
                    last_warning = Some(std::time::Instant::now());
                }
            }
            None => return,
        }
    }
}

/// Reads the audit log as it grows and puts the entries that name a customer on the hub: the
/// security events of the streams. Woken at once by this process's audit writes, and every
/// 250 ms for other processes' (replicas sharing the security store).
pub async fn tail_audit(state: Arc<AppState>) {
    use std::sync::atomic::Ordering;
    // Start at the log's end: streams replay older entries from the store themselves.
    let mut position = loop {
        match state.security.audit_end().await {
            Ok(end) => break end,
            Err(e) => {
                tracing::warn!(error = %e, "reading the audit log failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    state.audit_position.store(position, Ordering::Release);
    loop {
        let page = match state.security.audit_after(position, 500).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "reading the audit log failed");
                Vec::new()
            }
        };
        if page.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(250), state.auth.audit_written.notified()).await;
            continue;
        }
        for entry in page {
            position = entry.position;
            if entry.customer_id.is_some() {
                if let Some(out) = Outgoing::security(entry) {
                    state.hub.publish(out);
                }
            }
        }
        // After sending: a stream that read this position has every later entry coming live.
        state.audit_position.store(position, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use bp_core::account::AccountStatus;
    use bp_core::event::{EVENT_VERSION, EventBody};
    use bp_core::ids::EventId;

    use super::*;

    fn event(account: AccountId) -> Arc<Outgoing> {
        let body = EventBody::AccountStatusChanged { status: AccountStatus::Frozen };
        let event = Event {
            id: EventId::derive(account, 2),
            account_id: account,
            seq: 2,
            version: EVENT_VERSION,
            at: chrono::Utc::now(),
            body,
        };
        Outgoing::ledger(event).expect("json")
    }

    fn security(customer: CustomerId) -> Arc<Outgoing> {
        let entry = AuditEntry {
            position: 1,
            at: chrono::Utc::now(),
            kind: AuditKind::LoginSucceeded,
            customer_id: Some(customer),
            detail: serde_json::Map::new(),
        };
        Outgoing::security(entry).expect("json")
    }

    #[test]
    fn the_hub_routes_by_customer_and_forgets_customers_without_streams() {
        let hub = Hub::new(8);
        let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
        let (ada_account, bob_account) = (AccountId::new_v7(), AccountId::new_v7());
        let mut rx = hub.subscribe(ada, &[ada_account]);
        hub.publish(event(bob_account));
        hub.publish(security(bob));
        hub.publish(event(ada_account));
        hub.publish(security(ada));
        assert!(matches!(rx.try_recv().expect("ada's event").what, What::Ledger(ref e) if e.account_id == ada_account));
        assert!(matches!(rx.try_recv().expect("ada's security event").what, What::Security(_)));
        assert!(rx.try_recv().is_err(), "nothing of bob's");

        // A stream going away (its receiver is the last) takes its routes with it.
        hub.release(ada, 1);
        drop(rx);
        assert!(hub.routes.read().expect("lock").accounts.is_empty());

        // A receiver dropped without a release is forgotten at the next event for it.
        drop(hub.subscribe(bob, &[bob_account]));
        hub.publish(event(bob_account));
        let routes = hub.routes.read().expect("lock");
        assert!(routes.customers.is_empty() && routes.accounts.is_empty());
    }
}
