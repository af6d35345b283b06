//! One client's stream ([`ClientStream`]): first its accounts' events from the store after its
//! cursor and its security events from the audit log, then the live ones from the hub, each as an
//! SSE message whose `id` is the cursor after it; and the response that carries it ([`response`])
//! to whichever transport takes it.
//!
//! A stream takes only what it reads ([`Sources`]): the ledger store and the audit log to catch up
//! and fill gaps, the hub for live events, and its heartbeat period.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use bp_core::Store;
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId, SessionId};
use bp_core::security::{AuditEntry, AuditKind, SecurityStore};
use bp_notify::sequencer::{Sequencer, Verdict};
use tokio::sync::broadcast;

use crate::events::cursor::write_cursor;
use crate::events::hub::{Hub, Outgoing, What};

/// The comment an idle stream sends every `bus.stream_heartbeat_s`.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";
/// Audit entries of the stream's customer read at once while catching up.
const AUDIT_PAGE_LEN: u32 = 500;

/// What a stream reads, and how often it speaks when idle.
#[derive(Clone)]
pub struct Sources {
    /// The ledger's store: the accounts' events after the cursor, and those of a gap.
    pub store: Arc<dyn Store>,
    /// The security records: the audit log after the cursor.
    pub security: Arc<dyn SecurityStore>,
    /// The live events.
    pub hub: Arc<Hub>,
    /// How long a stream may stay silent before a heartbeat comment (`bus.stream_heartbeat_s`).
    pub heartbeat_every: Duration,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").field("heartbeat_every", &self.heartbeat_every).finish_non_exhaustive()
    }
}

/// The response of a stream: `text/event-stream`, its body the stream itself (hyper's transport),
/// unless a connection of its own takes the stream from the response's extensions first
/// ([`Handoff`]).
pub fn response(stream: ClientStream) -> Response {
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
    response
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

/// A stream on its way out of the handler, for whichever transport takes it first: a connection
/// of its own ([`stream_conn`](super::stream_conn)) takes it whole from the response's
/// extensions, to be written by the [`pump`](super::pump)s; otherwise the response body (hyper)
/// takes it at its first poll.
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
    sources: Sources,
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
        sources: Sources,
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
        let heartbeat_every = sources.heartbeat_every;
        Self {
            sources,
            customer,
            session,
            ending: false,
            ended: false,
            held: None,
            audit,
            audit_catching_up: true,
            catching_up: Some(0),
            ids,
            positions: start,
            seq,
            ready: std::collections::VecDeque::new(),
            live,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat_every)),
            deadline: None,
            last_sent: tokio::time::Instant::now(),
        }
    }

    /// The stream ends at `deadline` (after what is ready then is sent): when the authority it
    /// was opened with ends.
    pub fn until(mut self, deadline: tokio::time::Instant) -> Self {
        self.deadline = Some(deadline);
        let wake = self.wake_at(self.last_sent + self.sources.heartbeat_every);
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
    /// ([`Step::Settle`]: call [`ClientStream::settle`]). Never blocks: the [`pump`](super::pump)
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
            let Ok(page) = self.sources.store.events_after(account, after, 500).await else { return false };
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
            let customer = self.customer;
            let Ok(page) = self.sources.security.audit_of(customer, self.audit, AUDIT_PAGE_LEN).await else {
                return false;
            };
            if page.is_empty() {
                self.audit_catching_up = false;
                return true;
            }
            for e in page {
                self.note_revocation(&e);
                let Some(out) = Outgoing::security(e) else { return false };
                self.ready.push_back(out);
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
                            let due = self.last_sent + self.sources.heartbeat_every;
                            if now < due {
                                // A message went out since the timer was set: wait until it is due.
                                let wake = self.wake_at(due);
                                self.heartbeat.as_mut().reset(wake);
                                continue;
                            }
                            self.last_sent = now;
                            let wake = self.wake_at(now + self.sources.heartbeat_every);
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
        let behind = self.live.len() > self.sources.hub.ring_len();
        if behind {
            self.lagged();
        }
        behind
    }

    /// Whose stream this is.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }

    /// The hub the stream reads its live events from.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.sources.hub
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
        self.sources.heartbeat_every
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
        for e in self.seq.admit(event, self.sources.store.as_ref()).await.ok()? {
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
        self.sources.hub.release(self.customer, 1);
        metrics::gauge!("bp_sse_clients").decrement(1.0);
    }
}
