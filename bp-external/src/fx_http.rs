//! The HTTP adapter of bp-core's `FxProvider`: JSON over reqwest (rustls), following the FX
//! provider's contract ([`crate::contract::fx`], `docs/external-services.md`), with the rail's
//! timeouts, retries, circuit breaker and mapping of outcomes ([`crate::http_party`]).
//!
//! # How an answer becomes a `CallError`
//! - `quote`: `201` (new) or `200` (the same key again) with a quote for exactly what was asked
//!   → the quote; a 4xx with the problem type `urn:bp:fx:refused` → `Refused` (its reason
//!   code: `AM03` for a pair it does not quote).
//! - `quote_by_id`: `200` with the quote of that id → `Some`; `404` with the type
//!   `urn:bp:fx:quote-not-found` → `None`.
//! - No connection made → `NotSent`; a timeout or a connection lost after sending, a 5xx or 429
//!   on the last attempt, and any answer outside the contract (unreadable JSON, a quote for
//!   another amount, pair or id, a zero rate, a 404 without its type, a 409 key conflict, a
//!   redirect) → `Unknown`, never `Refused`.
//!
//! # Retries
//! As the rail's: a connection not made and a 5xx/429 are retried with the same key and the
//! very same body bytes. A quote request that timed out is not sent again within the call:
//! the customer's retry (the same key, so the same quote) or the quote's id decides, rather
//! than sending again at once to a provider that is slow. `quote_by_id` is a read: retried
//! after a timeout too.

use std::sync::Arc;

use async_trait::async_trait;
use bp_core::clock::{Clock, SystemClock};
use bp_core::external::fx::{FxProvider, ProviderQuote, QuoteId, QuoteRequest};
use bp_core::external::{CallError, CallKey, NotSent, Refusal};
use bp_core::random::{OsRandomness, Randomness};
use reqwest::{StatusCode, Url, header};

use crate::breaker::CircuitBreaker;
use crate::contract::fx::{PROBLEM_QUOTE_NOT_FOUND, PROBLEM_REFUSED, QUOTES_PATH, Quote, QuoteAsk, is_path_safe};
use crate::contract::{IDEMPOTENCY_KEY_HEADER, JSON, JSON_BYTES_MAX};
use crate::http_party::{Caller, ConfigError, HttpPartyConfig, RetryLost, is_problem, malformed, refusal};

/// The FX provider's name in logs and metrics (the breaker's `party` label).
pub const PARTY: &str = "fx";

/// The FX provider over HTTP; see the module documentation.
#[derive(Debug)]
pub struct HttpFxProvider {
    /// The base URL, ending with `/`.
    base: Url,
    quotes_url: Url,
    caller: Caller,
}

impl HttpFxProvider {
    /// The adapter with the system's clock and the operating system's randomness.
    pub fn new(config: HttpPartyConfig) -> Result<Self, ConfigError> {
        Self::with_clock_and_random(config, Arc::new(SystemClock), Arc::new(OsRandomness))
    }

    /// The adapter with an injected clock (the breaker's cool-down) and randomness (the
    /// retries' jitter).
    pub fn with_clock_and_random(
        config: HttpPartyConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Randomness>,
    ) -> Result<Self, ConfigError> {
        let caller = Caller::new(PARTY, &config, JSON_BYTES_MAX, clock, random)?;
        let base = config.base();
        let quotes_url = base.join(QUOTES_PATH).map_err(|_| ConfigError("base_url cannot hold a path"))?;
        Ok(Self { base, quotes_url, caller })
    }

    /// The circuit breaker, for its state and counters.
    pub fn breaker(&self) -> &CircuitBreaker {
        self.caller.breaker()
    }

    /// A 4xx refusal of the contract, or else an answer outside it.
    fn refused_or_malformed(&self, key: &(dyn std::fmt::Display + Sync), status: StatusCode, body: &[u8]) -> CallError {
        refusal(status, body, PROBLEM_REFUSED).unwrap_or_else(|| self.caller.outside_contract(key, status))
    }
}

/// The quote in `body`, if it is one the contract allows.
fn read_quote(body: &[u8]) -> Result<Quote, CallError> {
    let quote: Quote = serde_json::from_slice(body).map_err(|_| malformed())?;
    if quote.rate.is_zero() || !is_path_safe(&quote.id) {
        return Err(malformed());
    }
    Ok(quote)
}

#[async_trait]
impl FxProvider for HttpFxProvider {
    async fn quote(&self, request: &QuoteRequest, key: &CallKey) -> Result<ProviderQuote, CallError> {
        let ask = QuoteAsk::from(request);
        // Written once: every retry of this call sends the very same bytes.
        let Ok(body) = serde_json::to_vec(&ask) else { return Err(CallError::Refused(Refusal { code: None })) };
        let request = || {
            self.caller
                .client()
                .post(self.quotes_url.clone())
                .header(header::CONTENT_TYPE, JSON)
                .header(header::ACCEPT, JSON)
                .header(IDEMPOTENCY_KEY_HEADER, key.as_str())
                .body(body.clone())
        };
        let classify = |status: StatusCode, body: &[u8]| match status {
            StatusCode::OK | StatusCode::CREATED => {
                let quote = read_quote(body)?;
                if quote.answers(&ask) { Ok(quote.into()) } else { Err(malformed()) }
            }
            _ => Err(self.refused_or_malformed(key, status, body)),
        };
        self.caller.call(key, &request, RetryLost::No, &classify).await
    }

    async fn quote_by_id(&self, id: &QuoteId) -> Result<Option<ProviderQuote>, CallError> {
        if !is_path_safe(id) {
            // No quote of the contract has such an id (`quote` never returns one).
            return Ok(None);
        }
        // An id is letters, digits, '-', '_' and '.': it needs no escaping in a path.
        let url = self.base.join(&format!("{QUOTES_PATH}/{}", id.as_str()));
        let Ok(url) = url else { return Err(CallError::NotSent(NotSent::NoConnection)) };
        let request = || self.caller.client().get(url.clone()).header(header::ACCEPT, JSON);
        let classify = |status: StatusCode, body: &[u8]| match status {
            StatusCode::OK => {
                let quote = read_quote(body)?;
                if quote.id == *id { Ok(Some(quote.into())) } else { Err(malformed()) }
            }
            StatusCode::NOT_FOUND if is_problem(body, PROBLEM_QUOTE_NOT_FOUND) => Ok(None),
            _ => Err(self.refused_or_malformed(id, status, body)),
        };
        self.caller.call(id, &request, RetryLost::Yes, &classify).await
    }
}
