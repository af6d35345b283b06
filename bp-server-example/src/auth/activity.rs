//! The inactivity limit (PSD2 RTS art. 4(3)(d)): a session of this server ends
//! `auth.idle_timeout_s` (300 s) after its customer's last activity, and is then revoked, stored
//! and audited like a sign-out, which also ends its event streams.
//!
//! Activity is an API request the customer makes: the `Auth` extractor counts one, unless the
//! request says `BP-Activity: background` (an app's own follow-up, such as reloading a list
//! after a live event). Refreshing a token, the event stream and its tickets, and userinfo are
//! not activity: an app's timers cannot keep a session alive. Every use of a token — those
//! included — is refused once the deadline has passed.
//!
//! The last activity is kept in the security store, so that it survives restarts and replicas
//! share it, and in this process's memory, so that a request costs no store read. The store is
//! written when its time is [`STORE_LAG_MAX_S`] (or a tenth of the limit, if less) behind: after
//! a restart a session may end that much sooner, never later. A session this process thinks
//! idle is looked up in the store before it is ended (another replica may have seen it since).
//! A job ([`Provider::end_idle_sessions`], every second) ends the idle sessions this process has
//! seen, so that their streams end on time too.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bp_core::Timestamp;
use bp_core::ids::{CustomerId, SessionId};
use bp_core::security::AuditKind;
use chrono::Duration;

use crate::auth::{Provider, oauth, secs};
use crate::http::problem::ApiError;

/// The most the store's time of a session's last activity lags behind the truth.
pub const STORE_LAG_MAX_S: i64 = 10;
/// Sessions whose activity this process remembers at most; beyond, a new one is looked up in the
/// store at each request until some end.
const SESSIONS_MAX: usize = 1_000_000;
/// The header by which a client marks a request that is not its customer's doing.
pub const BACKGROUND_HEADER: &str = "bp-activity";

/// A session's activity as this process knows it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    customer: CustomerId,
    /// The last activity.
    last: Timestamp,
    /// The last activity written to the store.
    stored: Timestamp,
}

/// The sessions this process has seen used, by id.
#[derive(Debug, Default)]
pub struct Activity {
    seen: Mutex<HashMap<SessionId, Seen>>,
}

impl Activity {
    fn get(&self, session: SessionId) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).get(&session).copied()
    }
}

impl Provider {
    fn idle_limit(&self) -> Duration {
        Duration::seconds(secs(self.config.idle_timeout_s))
    }

    fn store_lag(&self) -> Duration {
        Duration::seconds(STORE_LAG_MAX_S.min(secs(self.config.idle_timeout_s) / 10))
    }

    /// Refuses a use of `session` (of `customer`, signed in at `signed_in`) after its idle
    /// deadline, ending the session (stored and audited).
    pub async fn check_idle(
        &self,
        session: SessionId,
        customer: CustomerId,
        signed_in: Timestamp,
    ) -> Result<(), ApiError> {
        let now = self.now();
        let known = self.activity.get(session);
        if known.is_some_and(|s| s.last + self.idle_limit() > now) {
            return Ok(());
        }
        // Not seen here yet, or idle as seen here: the store decides.
        let stored = self.security.session_active_at(session).await?;
        let last = [stored, known.map(|s| s.last), Some(signed_in)].into_iter().flatten().max().unwrap_or(signed_in);
        if last + self.idle_limit() > now {
            let mut seen = self.activity.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.len() < SESSIONS_MAX || seen.contains_key(&session) {
                let stored = stored.unwrap_or(signed_in);
                let entry = seen.entry(session).or_insert(Seen { customer, last, stored });
                entry.last = entry.last.max(last);
            }
            return Ok(());
        }
        self.end_idle(session, customer).await?;
        Err(ApiError::SessionInactive(self.config.idle_timeout_s))
    }

    /// Counts a request of `session` as its customer's activity now.
    pub async fn note_activity(&self, session: SessionId, customer: CustomerId) -> Result<(), ApiError> {
        let now = self.now();
        let write = {
            let mut seen = self.activity.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.len() >= SESSIONS_MAX && !seen.contains_key(&session) {
                true
            } else {
                let entry = seen.entry(session).or_insert(Seen { customer, last: now, stored: Timestamp::MIN_UTC });
                entry.last = entry.last.max(now);
                let due = now - entry.stored >= self.store_lag();
                if due {
                    entry.stored = now;
                }
                due
            }
        };
        if write {
            self.security.record_session_activity(session, now).await?;
        }
        Ok(())
    }

    /// Ends, stored and audited, the sessions this process has seen whose idle deadline has
    /// passed (unless the store knows of later activity); the job runs it every second.
    pub async fn end_idle_sessions(&self) {
        let now = self.now();
        let idle: Vec<(SessionId, Seen)> = {
            let mut seen = self.activity.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let idle: Vec<_> =
                seen.iter().filter(|(_, s)| s.last + self.idle_limit() <= now).map(|(k, s)| (*k, *s)).collect();
            for (session, _) in &idle {
                seen.remove(session);
            }
            idle
        };
        for (session, s) in idle {
            match self.check_idle(session, s.customer, s.last).await {
                Ok(()) | Err(ApiError::SessionInactive(_)) => {}
                Err(e) => tracing::warn!(error = %e, "ending an idle session failed"),
            }
        }
    }

    /// Revokes `session` for inactivity: at once here, stored, audited (which ends its streams).
    async fn end_idle(&self, session: SessionId, customer: CustomerId) -> Result<(), ApiError> {
        self.activity.seen.lock().unwrap_or_else(PoisonError::into_inner).remove(&session);
        if !self.verifier.is_revoked(Some(session)) {
            metrics::counter!("bp_sessions_idle_ended_total").increment(1);
        }
        let detail = serde_json::json!({ "reason": "inactivity" });
        oauth::revoke_session(self, session, Some(customer), AuditKind::SessionRevoked, detail).await
    }
}
