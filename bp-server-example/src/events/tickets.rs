//! Stream tickets: browsers' `EventSource` cannot send an `Authorization` header, so a client
//! first exchanges its access token for a ticket (`POST /v1/events/ticket`) and opens the stream
//! with it. A ticket is 256 random bits, kept hashed in memory, single-use, valid
//! [`TICKET_TTL_S`] seconds, bound to its customer and session and to when their authority ends.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bp_core::Timestamp;
use bp_core::ids::{CustomerId, SessionId};

use crate::auth::crypto::{random_token, sha256};
use crate::http::problem::ApiError;

/// How long a stream ticket is valid.
pub const TICKET_TTL_S: i64 = 30;
/// Unspent tickets kept at most.
const TICKETS_MAX: usize = 100_000;
/// Unspent tickets of one customer at most, so that one customer cannot use up everyone's.
const TICKETS_PER_CUSTOMER_MAX: usize = 20;

/// Unspent stream tickets, by hash.
#[derive(Debug, Default)]
pub struct Tickets {
    map: Mutex<HashMap<[u8; 32], Ticketed>>,
}

/// Whose a ticket is, and until when.
#[derive(Debug)]
pub struct Ticketed {
    /// Whose stream it opens.
    pub customer: CustomerId,
    /// The session it was made in (its revocation makes the ticket worthless).
    pub session: Option<SessionId>,
    /// When the ticket expires.
    pub until: Timestamp,
    /// When the authority the ticket was made with ends: its stream's too.
    pub authority_until: Timestamp,
}

impl Tickets {
    /// A new ticket for `customer` signed in with `session` at `now`, whose stream may last until
    /// `authority_until`. Refused (rate limited) while `TICKETS_PER_CUSTOMER_MAX` of the
    /// customer's, or `TICKETS_MAX` in all, are unspent.
    pub fn issue(
        &self,
        now: Timestamp,
        (customer, session): (CustomerId, Option<SessionId>),
        authority_until: Timestamp,
    ) -> Result<String, ApiError> {
        let token = random_token(32);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, t| t.until > now);
        let customers = map.values().filter(|t| t.customer == customer).count();
        if customers >= TICKETS_PER_CUSTOMER_MAX || map.len() >= TICKETS_MAX {
            return Err(ApiError::RateLimited { retry_after_s: 5 });
        }
        let ticketed =
            Ticketed { customer, session, until: now + chrono::Duration::seconds(TICKET_TTL_S), authority_until };
        map.insert(sha256(token.as_bytes()), ticketed);
        Ok(token)
    }

    /// Spends `ticket`: what it was issued for, once; the caller checks that it has not expired.
    pub fn spend(&self, ticket: &str) -> Option<Ticketed> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).remove(&sha256(ticket.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_customer_cannot_use_up_everyones_tickets() {
        let tickets = Tickets::default();
        let now = chrono::Utc::now();
        let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
        for _ in 0..TICKETS_PER_CUSTOMER_MAX {
            tickets.issue(now, (ada, None), now).expect("within the bound");
        }
        assert!(matches!(tickets.issue(now, (ada, None), now), Err(ApiError::RateLimited { .. })));
        let bobs = tickets.issue(now, (bob, None), now).expect("another customer still gets one");
        assert_eq!(tickets.spend(&bobs).map(|t| t.customer), Some(bob));
        let later = now + chrono::Duration::seconds(TICKET_TTL_S + 1);
        tickets.issue(later, (ada, None), later).expect("expired tickets no longer count");
    }
}
