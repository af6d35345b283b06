//! Adapters of the bank's outside parties (FR6), as bp-storage holds the storage adapters and
//! bp-notify the bus adapters: the HTTP adapters of bp-core's `PaymentRail`
//! ([`rail_http::HttpRail`], one per rail), `FxProvider` ([`fx_http::HttpFxProvider`]) and
//! `LoanProvider` ([`loan_http::HttpLoanProvider`]), sharing one way of calling a party over
//! HTTP ([`http_party`]) with its circuit breaker ([`breaker`]); the authentication of the
//! rail's signed webhooks ([`webhook`]); and, behind the `simulator` feature, the simulator of
//! the outside parties that development mode and the tests run on loopback (`simulator`), so
//! that the real HTTP adapters are the code path everywhere.
//!
//! The HTTP contracts (paths, headers, status codes, bodies, signatures) are written once in
//! [`contract`] and in `docs/external-services.md`. Nothing here decides what an answer means
//! for the bank: bp-core's `external` lifecycles do.

pub mod breaker;
pub mod contract;
pub mod fx_http;
pub mod http_party;
pub mod loan_http;
pub mod rail_http;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod webhook;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use fx_http::HttpFxProvider;
pub use http_party::{ConfigError, HttpPartyConfig};
pub use loan_http::HttpLoanProvider;
pub use rail_http::{HttpRail, HttpRailConfig};
pub use webhook::{WebhookError, WebhookSecret, WebhookVerifier};
