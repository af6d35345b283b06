//! The in-process event bus: a tokio broadcast channel. The default for a single server; every
//! subscriber of the process gets every event, in publication order.

use async_trait::async_trait;
use bp_core::bus::{BusError, EventBus, Subscription};
use bp_core::event::Event;
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it is told it lagged (and must catch up from the
/// store).
pub const CAPACITY_DEFAULT: usize = 16_384;

/// The in-process [`EventBus`].
#[derive(Clone, Debug)]
pub struct BroadcastBus {
    tx: broadcast::Sender<Event>,
}

impl Default for BroadcastBus {
    fn default() -> Self {
        Self::new(CAPACITY_DEFAULT)
    }
}

impl BroadcastBus {
    /// A bus on which a subscriber may be up to `capacity` events behind (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }
}

#[async_trait]
impl EventBus for BroadcastBus {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        for event in events {
            // No subscriber is not an error: the events are in the store for whoever comes.
            let _ = self.tx.send(event.clone());
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BusError> {
        Ok(Box::new(BroadcastSubscription { rx: self.tx.subscribe() }))
    }
}

struct BroadcastSubscription {
    rx: broadcast::Receiver<Event>,
}

#[async_trait]
impl Subscription for BroadcastSubscription {
    async fn next(&mut self) -> Option<Result<Event, BusError>> {
        match self.rx.recv().await {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(BusError::Lagged(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
