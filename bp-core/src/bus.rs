//! The event bus: how committed events travel from the outbox relay to every consumer (each API
//! replica, and through it each connected client). The traits are here; the adapters (an
//! in-process broadcast, Kafka) are in `bp-notify`.
//!
//! Delivery is at least once and in order per account: a consumer drops what it has seen by
//! (account, sequence) and fills a gap in an account's sequence from the store, never skipping it.

use async_trait::async_trait;

use crate::event::Event;

/// Why the bus could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus (a broker) cannot be reached or refused the events; retry later. Events whose
    /// publication failed may or may not have been delivered: publish them again.
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
    /// The subscriber fell behind and the bus dropped `0` events for it: it must catch up from
    /// the store (events are never lost there).
    #[error("the subscriber fell behind and missed {0} events")]
    Lagged(u64),
    /// The bus was shut down.
    #[error("the event bus is closed")]
    Closed,
}

/// Carries committed events to every subscriber.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes `events`, in order: when it returns `Ok`, every one of them is on the bus. Each
    /// account's events reach every subscriber in the order published.
    async fn publish(&self, events: &[Event]) -> Result<(), BusError>;

    /// A new subscription, receiving the events published after it was made.
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BusError>;
}

/// One subscriber's stream of events.
#[async_trait]
pub trait Subscription: Send {
    /// The next event, an error the subscriber must act on (such as [`BusError::Lagged`]), or
    /// `None` once the bus is closed.
    async fn next(&mut self) -> Option<Result<Event, BusError>>;
}
