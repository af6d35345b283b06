//! Adapters of the bank's outside parties (FR6), as bp-storage holds the storage adapters and
//! bp-notify the bus adapters: the HTTP adapter of bp-core's `PaymentRail`
//! ([`rail_http::HttpRail`]), with its circuit breaker ([`breaker`]); the authentication of the
//! rail's signed webhooks ([`webhook`]); and, behind the `simulator` feature, the simulator of
//! the outside parties that development mode and the tests run on loopback
//! (`simulator`), so that the real HTTP adapter is the code path everywhere.
//!
//! The rail's HTTP contract (paths, headers, status codes, bodies, signatures) is written once
//! in [`contract`] and in `docs/external-services.md`, "The rail's HTTP contract". Nothing here
//! decides what a payment's answer means for the bank: bp-core's `external::lifecycle` does.

pub mod breaker;
pub mod contract;
pub mod rail_http;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod webhook;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use rail_http::{HttpRail, HttpRailConfig};
pub use webhook::{WebhookError, WebhookSecret, WebhookVerifier};
