//! Stream tickets: browsers' `EventSource` cannot send an `Authorization` header, so a client
//! first exchanges its access token for a ticket (`POST /v1/events/ticket`) and opens the stream
//! with it. A ticket is 256 random bits, single-use, valid [`TICKET_TTL_S`] seconds, bound to
//! its customer and session and to when their authority ends. It is kept hashed in the security
//! store as a transient record ([`bp_core::transient`]), so that the stream may be opened on
//! another server process than the one that issued the ticket.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bp_core::Timestamp;
use bp_core::ids::{CustomerId, SessionId};
use bp_core::security::SecurityStore;
use bp_core::transient::{Spend, Transient, TransientKind};
use serde::{Deserialize, Serialize};

use crate::auth::crypto::{random_token, sha256};
use crate::http::problem::ApiError;

/// How long a stream ticket is valid.
pub const TICKET_TTL_S: i64 = 30;
/// Customers with tickets issued by this process within [`TICKET_TTL_S`] at most.
const TICKET_CUSTOMERS_MAX: usize = 100_000;
/// Tickets one customer gets from this process within [`TICKET_TTL_S`] at most, so that one
/// customer cannot fill the store.
const TICKETS_PER_CUSTOMER_MAX: usize = 20;

/// Issues and spends stream tickets; keeps this process's budget of tickets per customer.
#[derive(Debug, Default)]
pub struct Tickets {
    /// When this process issued each customer's recent tickets.
    issued: Mutex<HashMap<CustomerId, Vec<Timestamp>>>,
}

/// Whose a ticket is, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `authority_until`, stored in `store`. Refused (rate limited) when this process issued
    /// `TICKETS_PER_CUSTOMER_MAX` of the customer's within the last [`TICKET_TTL_S`].
    pub async fn issue(
        &self,
        store: &dyn SecurityStore,
        now: Timestamp,
        (customer, session): (CustomerId, Option<SessionId>),
        authority_until: Timestamp,
    ) -> Result<String, ApiError> {
        let until = now + chrono::Duration::seconds(TICKET_TTL_S);
        {
            let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
            issued.retain(|_, times| {
                times.retain(|t| *t + chrono::Duration::seconds(TICKET_TTL_S) > now);
                !times.is_empty()
            });
            if !issued.contains_key(&customer) && issued.len() >= TICKET_CUSTOMERS_MAX {
                return Err(ApiError::RateLimited { retry_after_s: 5 });
            }
            let times = issued.entry(customer).or_default();
            if times.len() >= TICKETS_PER_CUSTOMER_MAX {
                return Err(ApiError::RateLimited { retry_after_s: 5 });
            }
            times.push(now);
        }
        let token = random_token(32);
        let ticketed = Ticketed { customer, session, until, authority_until };
        let value = serde_json::to_vec(&ticketed).map_err(|_| ApiError::Internal)?;
        let record = Transient {
            kind: TransientKind::StreamTicket,
            key: sha256(token.as_bytes()),
            value,
            expires_at: until,
            spent: false,
        };
        store.put_transient(record).await?;
        Ok(token)
    }

    /// Spends `ticket` at `now`: what it was issued for, once and before it expires; `None` for
    /// an unknown, spent or expired ticket.
    pub async fn spend(
        &self,
        store: &dyn SecurityStore,
        ticket: &str,
        now: Timestamp,
    ) -> Result<Option<Ticketed>, ApiError> {
        match store.spend_transient(TransientKind::StreamTicket, sha256(ticket.as_bytes()), now).await? {
            Spend::First(record) => Ok(serde_json::from_slice(&record.value).ok()),
            Spend::Again(_) | Spend::Expired | Spend::Unknown => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use bp_core::security::MemorySecurityStore;

    use super::*;

    #[tokio::test]
    async fn one_customer_cannot_use_up_everyones_tickets() {
        let (tickets, store) = (Tickets::default(), MemorySecurityStore::new());
        let now = chrono::Utc::now();
        let (ada, bob) = (CustomerId::new_v7(), CustomerId::new_v7());
        for _ in 0..TICKETS_PER_CUSTOMER_MAX {
            tickets.issue(&store, now, (ada, None), now).await.expect("within the bound");
        }
        assert!(matches!(tickets.issue(&store, now, (ada, None), now).await, Err(ApiError::RateLimited { .. })));
        let bobs = tickets.issue(&store, now, (bob, None), now).await.expect("another customer still gets one");
        let spent = tickets.spend(&store, &bobs, now).await.expect("spend");
        assert_eq!(spent.map(|t| t.customer), Some(bob));
        assert_eq!(tickets.spend(&store, &bobs, now).await.expect("spend again"), None, "once");
        let later = now + chrono::Duration::seconds(TICKET_TTL_S + 1);
        tickets.issue(&store, later, (ada, None), later).await.expect("expired tickets no longer count");
    }

    #[tokio::test]
    async fn a_ticket_ends_unspent_after_its_time() {
        let (tickets, store) = (Tickets::default(), MemorySecurityStore::new());
        let now = chrono::Utc::now();
        let ticket = tickets.issue(&store, now, (CustomerId::new_v7(), None), now).await.expect("issue");
        let late = now + chrono::Duration::seconds(TICKET_TTL_S);
        assert_eq!(tickets.spend(&store, &ticket, late).await.expect("spend"), None);
    }
}
