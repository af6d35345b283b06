//! The hub: this process's fan-out of events to its streams, routed by customer, and the events
//! on their way ([`Outgoing`]), their SSE lines made once for all streams.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use axum::body::Bytes;
use bp_core::event::Event;
use bp_core::ids::{AccountId, CustomerId};
use bp_core::security::AuditEntry;
use tokio::sync::broadcast;

use crate::events::pump::{Attached, PumpHandle, Pumped};

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

    pub(super) fn ledger(event: Event) -> Option<Arc<Self>> {
        let json = serde_json::to_string(&event).ok()?;
        let type_name = event.body.type_name();
        Some(Self::new(What::Ledger(event), type_name, &json))
    }

    pub(super) fn security(entry: AuditEntry) -> Option<Arc<Self>> {
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
    pub(super) fn release(&self, customer: CustomerId, own: usize) {
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

    /// Whether a stream follows `account` now: its events are worth making into frames. Asked
    /// again when one is sent ([`Hub::publish`]); a stream opened in between reads the event
    /// from the store, as it does every event committed before it subscribed.
    pub(super) fn follows(&self, account: AccountId) -> bool {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).accounts.contains_key(&account)
    }

    /// Sends `out` to its customer's streams, if any are open.
    pub(super) fn publish(&self, out: Arc<Outgoing>) {
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

#[cfg(test)]
mod tests {
    use bp_core::account::AccountStatus;
    use bp_core::event::{EVENT_VERSION, EventBody};
    use bp_core::security::AuditKind;

    use super::*;

    fn event(account: AccountId) -> Arc<Outgoing> {
        let body = EventBody::AccountStatusChanged { status: AccountStatus::Frozen };
        let event = Event { account_id: account, seq: 2, version: EVENT_VERSION, at: chrono::Utc::now(), body };
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
