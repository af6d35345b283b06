//! The event-stream routes: `POST /v1/events/ticket` exchanges an access token for a stream
//! ticket, `GET /v1/events` opens the signed-in customer's stream (with a ticket, or an access
//! token: bearer, or DPoP-bound with its proof), resuming after `Last-Event-ID`. The streams
//! themselves are [`crate::events`]'s.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use bp_core::ids::AccountId;
use serde::{Deserialize, Serialize};

use crate::auth::tokens::Caller;
use crate::auth::{Passive, authenticate_request};
use crate::events::cursor::parse_cursor;
use crate::events::tickets::TICKET_TTL_S;
use crate::events::{ClientStream, response};
use crate::http::problem::ApiError;
use crate::state::AppState;

/// When the authority of `caller` ends without a new sign-in: for one of our sessions, the
/// session's end (a revocation ends it before); for an external issuer's token, whose revocation
/// we cannot see, the token's expiry. A stream lasts no longer than the authority it was opened
/// with.
fn authority_until(state: &AppState, caller: &Caller) -> bp_core::Timestamp {
    let at = |s: u64| {
        chrono::DateTime::from_timestamp(i64::try_from(s).unwrap_or(i64::MAX), 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    };
    match (caller.session, caller.auth_time) {
        (Some(_), Some(signed_in)) => state.auth.session_end(at(signed_in)),
        _ => at(caller.exp),
    }
}

/// The event stream's path: what DPoP proofs of its requests name (after the issuer).
pub const STREAM_PATH: &str = "/v1/events";

/// A stream ticket.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` to `/v1/events`, once, within `expires_in` seconds.
    pub ticket: String,
    /// Seconds.
    pub expires_in: i64,
}

/// `POST /v1/events/ticket`: not the customer's activity (an app reconnects by itself).
pub async fn ticket(
    State(state): State<Arc<AppState>>,
    Passive(auth): Passive,
) -> Result<axum::Json<Ticket>, ApiError> {
    auth.require("accounts")?;
    let until = authority_until(&state, &auth.0);
    let ticket =
        state.tickets.issue(state.security.as_ref(), state.now(), (auth.0.customer_id, auth.0.session), until).await?;
    Ok(axum::Json(Ticket { ticket, expires_in: TICKET_TTL_S }))
}

/// The query of `/v1/events`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    ticket: Option<String>,
    /// For clients that cannot set `Last-Event-ID`.
    last_event_id: Option<String>,
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
        (Some(t), _) => match state.tickets.spend(state.security.as_ref(), t, state.now()).await? {
            Some(t) if !state.auth.verifier.is_revoked(t.session) => (t.customer, t.session, t.authority_until),
            _ => return Err(ApiError::Unauthorized("unknown, used or expired stream ticket")),
        },
        (None, Some(_)) => {
            let caller = authenticate_request(&state.auth, headers, &Method::GET, STREAM_PATH).await?;
            if !caller.has_scope("accounts") {
                return Err(ApiError::Forbidden("the access token lacks the 'accounts' scope"));
            }
            (caller.customer_id, caller.session, authority_until(state, &caller))
        }
        (None, None) => return Err(ApiError::Unauthorized("a stream ticket or an access token is required")),
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
    let stream = ClientStream::new(state.stream_sources(), (customer, session), ids, (audit, start), live)
        .until(tokio::time::Instant::now() + lasts);
    Ok(response(stream))
}
