//! bp-notify: how committed events reach their consumers. The [`EventBus`] adapters (the
//! in-process [`broadcast::BroadcastBus`], the default; [`kafka::KafkaConfig`] and, with the feature `kafka`, `kafka::KafkaBus`), the
//! [`relay::Relay`] that moves committed events from the store's outbox to the bus, and the
//! [`sequencer::Sequencer`] with which a consumer drops duplicates and fills gaps from the store.
//!
//! [`EventBus`]: bp_core::bus::EventBus

pub mod broadcast;
pub mod kafka;
pub mod relay;
pub mod sequencer;
#[cfg(feature = "testing")]
pub mod testing;
