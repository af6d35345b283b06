//! Server-Sent Events: `GET /v1/events` streams the signed-in customer's own accounts' events.
//!
//! Browsers' `EventSource` cannot send an `Authorization` header, so a client first exchanges
//! its access token for a **stream ticket** (`POST /v1/events/ticket`): 256 random bits, kept
//! hashed in memory, single-use, valid 30 s, bound to the customer. `GET /v1/events?ticket=…`
//! spends it; clients that can send headers may use their bearer token instead.
//!
//! Each event's SSE `id` is a cursor naming the last sequence number delivered of every account
//! of the stream (`v1.<seq>.<seq>…`, accounts in id order). A client that reconnects with
//! `Last-Event-ID` receives every later event, replayed from the store, then the live ones from
//! the bus — with no gap and no duplicate (the [`Sequencer`] drops what was delivered and fills
//! gaps from the store). Each client has a bounded buffer; a client that lets it fill up is
//! disconnected (it can resume) so that no other client waits. Comments every 15 s keep idle
//! connections open through proxies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bp_core::bus::{BusError, EventBus};
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId};
use bp_notify::sequencer::Sequencer;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::crypto::{random_token, sha256};
use crate::problem::ApiError;
use crate::state::{AppState, Auth, authenticate};

/// Events buffered for one client before it is disconnected as too slow.
pub const CLIENT_BUFFER_LEN: usize = 256;
/// How long a stream ticket is valid.
pub const TICKET_TTL_S: i64 = 30;
/// Unspent tickets kept at most.
const TICKETS_MAX: usize = 100_000;

/// Unspent stream tickets, by hash; and the JSON of recent events, made once for all the
/// streams that send them.
#[derive(Debug, Default)]
pub struct Streams {
    map: Mutex<HashMap<[u8; 32], (CustomerId, bp_core::Timestamp)>>,
    json: Mutex<HashMap<bp_core::EventId, Arc<str>>>,
}

/// Events whose JSON is kept for the streams at most.
const JSON_CACHED_MAX: usize = 4_096;

impl Streams {
    /// The JSON of `event`, serialised by the first stream that sends it.
    fn json_of(&self, event: &Event) -> Option<Arc<str>> {
        if let Some(j) = self.json.lock().unwrap_or_else(PoisonError::into_inner).get(&event.id) {
            return Some(Arc::clone(j));
        }
        let j: Arc<str> = serde_json::to_string(event).ok()?.into();
        let mut cache = self.json.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= JSON_CACHED_MAX {
            cache.clear();
        }
        cache.insert(event.id, Arc::clone(&j));
        Some(j)
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
    map.retain(|_, (_, until)| *until > now);
    if map.len() >= TICKETS_MAX {
        return Err(ApiError::RateLimited { retry_after_s: 5 });
    }
    map.insert(sha256(token.as_bytes()), (auth.0.customer_id, now + chrono::Duration::seconds(TICKET_TTL_S)));
    Ok(axum::Json(Ticket { ticket: token, expires_in: TICKET_TTL_S }))
}

/// The query of `/v1/events`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    ticket: Option<String>,
    /// For clients that cannot set `Last-Event-ID`.
    last_event_id: Option<String>,
}

/// A stream cursor: the last sequence number delivered per account, in the stream's account order.
fn cursor_id(positions: &[u64]) -> String {
    let mut out = String::from("v1");
    for p in positions {
        out.push('.');
        out.push_str(&p.to_string());
    }
    out
}

fn parse_cursor(id: &str, accounts: &[AccountId]) -> Option<Vec<u64>> {
    let mut parts = id.trim().split('.');
    if parts.next()? != "v1" {
        return None;
    }
    let seqs: Vec<u64> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    // Accounts opened since the cursor was made start from the beginning.
    (seqs.len() <= accounts.len())
        .then(|| accounts.iter().enumerate().map(|(i, _)| seqs.get(i).copied().unwrap_or(0)).collect())
}

/// `GET /v1/events`.
pub async fn stream(State(state): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<StreamQuery>) -> Response {
    match open(&state, &headers, &q).await {
        Ok(sse) => sse,
        Err(e) => e.into_response(),
    }
}

async fn open(state: &Arc<AppState>, headers: &HeaderMap, q: &StreamQuery) -> Result<Response, ApiError> {
    let customer = match (&q.ticket, headers.get(axum::http::header::AUTHORIZATION)) {
        (Some(t), _) => {
            let spent = state.streams.map.lock().unwrap_or_else(PoisonError::into_inner).remove(&sha256(t.as_bytes()));
            match spent {
                Some((customer, until)) if until > state.now() => customer,
                _ => return Err(ApiError::Unauthorized("unknown, used or expired stream ticket")),
            }
        }
        (None, Some(value)) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .ok_or(ApiError::Unauthorized("malformed authorization"))?;
            let caller = authenticate(state, token.trim()).await?;
            if !caller.has_scope("accounts") {
                return Err(ApiError::Forbidden("the access token lacks the 'accounts' scope"));
            }
            caller.customer_id
        }
        (None, None) => return Err(ApiError::Unauthorized("a stream ticket or a bearer token is required")),
    };
    // Subscribe before reading the store, so that nothing committed in between is missed.
    let mut subscription = state.hub.subscribe().await.map_err(|_| ApiError::Unavailable)?;
    let mut accounts: Vec<_> = state.ledger.accounts_of(customer).await?;
    accounts.sort_by_key(|a| a.id);
    let ids: Vec<AccountId> = accounts.iter().map(|a| a.id).collect();
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| q.last_event_id.clone());
    let start: Vec<u64> = match last_event_id {
        Some(id) => parse_cursor(&id, &ids)
            .ok_or_else(|| ApiError::BadRequest("Last-Event-ID is not a cursor of this stream".into()))?,
        None => accounts.iter().map(|a| a.last_event_seq).collect(),
    };
    let mut seq = Sequencer::new();
    for (a, s) in ids.iter().zip(&start) {
        seq.start_at(*a, *s);
    }
    let (tx, rx) = mpsc::channel::<SseEvent>(CLIENT_BUFFER_LEN);
    let state2 = Arc::clone(state);
    let mut positions = start.clone();
    let mut shutdown = state.shutting_down.subscribe();
    if *shutdown.borrow() {
        return Err(ApiError::Unavailable);
    }
    tokio::spawn(async move {
        // Catch up from the store, account by account.
        for a in &ids {
            let mut after = seq.last(*a).unwrap_or(0);
            loop {
                let page = match state2.ledger.store().events_after(*a, after, 500).await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                let Some(end) = page.last().map(|e| e.seq) else { break };
                after = end;
                for e in page {
                    if !deliver(&state2, &tx, &ids, &mut positions, &mut seq, e).await {
                        return;
                    }
                }
            }
        }
        // Then live, from the bus.
        loop {
            tokio::select! {
                () = tx.closed() => return,
                _ = shutdown.changed() => return,
                next = subscription.next() => match next {
                    Some(Ok(e)) if ids.contains(&e.account_id) => {
                        if !deliver(&state2, &tx, &ids, &mut positions, &mut seq, e).await {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    // Fell behind the bus: end the stream; the client resumes from its cursor.
                    Some(Err(BusError::Lagged(_))) | Some(Err(_)) | None => return,
                },
            }
        }
    });
    metrics::gauge!("bp_sse_clients").increment(1.0);
    let stream = futures_util::stream::unfold(ClientStream(rx), |mut s| async move {
        s.0.recv().await.map(|e| (Ok::<_, Infallible>(e), s))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("heartbeat"))
        .into_response())
}

/// The receiving end of one client's buffer; counts the client out when the stream ends.
struct ClientStream(mpsc::Receiver<SseEvent>);

impl Drop for ClientStream {
    fn drop(&mut self) {
        metrics::gauge!("bp_sse_clients").decrement(1.0);
    }
}

/// Passes `event` through the sequencer and sends what it yields; false when the client is
/// gone or too slow (its buffer is full: it is disconnected and may resume).
async fn deliver(
    state: &AppState,
    tx: &mpsc::Sender<SseEvent>,
    ids: &[AccountId],
    positions: &mut [u64],
    seq: &mut Sequencer,
    event: Event,
) -> bool {
    let Ok(ready) = seq.admit(event, state.ledger.store().as_ref()).await else { return false };
    for e in ready {
        // Each event's id says exactly what was delivered up to and including it.
        if let Some(i) = ids.iter().position(|a| *a == e.account_id) {
            positions[i] = e.seq;
        }
        let Some(json) = state.streams.json_of(&e) else { return false };
        let sse = SseEvent::default().event(e.body.type_name()).id(cursor_id(positions)).data(&*json);
        if tx.try_send(sse).is_err() {
            metrics::counter!("bp_sse_slow_clients_total").increment(1);
            return false;
        }
    }
    true
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

/// Forwards every event of the external bus to this server's streams. Subscribes first
/// (retrying with back-off while the bus is unreachable), then says so on `subscribed`: the
/// relay starts only then, so that this replica misses none of its own events.
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
                let _ = state.hub.publish(std::slice::from_ref(&event)).await;
            }
            // Transient (the adapter reconnects by itself); a stream that misses an event fills
            // the gap from the store.
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
