//! The HTTP adapter of bp-core's `PaymentRail`: pacs.008 out, pacs.002 back, over reqwest
//! (rustls), following the rail's HTTP contract ([`crate::contract`],
//! `docs/external-services.md`).
//!
//! # How an answer becomes a `CallError`
//! - 200/202 with a pacs.002 reporting our key → the answer; a 4xx with the problem type
//!   `urn:bp:rail:refused` → `Refused` (its reason code); a status query's 404 with the type
//!   `urn:bp:rail:order-not-found` → `RailStatus::NotFound`.
//! - No connection made (refused, no route, connect timeout): nothing was sent → `NotSent`.
//! - A timeout or a connection lost after the request left, a 5xx or 429 on the last attempt,
//!   and any answer outside the contract (unreadable XML, a report about another key, a 404
//!   without its type, a 409 key conflict, a redirect) → `Unknown`: the rail may have acted,
//!   so it is **never** `Refused`.
//!
//! # Retries
//! Within one call, with the same key and the very same body bytes, after a jittered
//! exponential back-off (bp-core's `BackOff`): a connection not made, and a 5xx or 429 (the
//! rail answered that it did not finish). A timeout or a connection lost after sending is
//! retried only by status queries (reads): a submission ends there as `Unknown`, and the
//! lifecycle asks for the status rather than sending again to a party that is slow. Once an
//! attempt may have reached the rail, the call can no longer end as `NotSent`. Every attempt
//! passes the circuit breaker; while it is open, calls fail fast as `NotSent::CircuitOpen`.
//! The machinery is shared with the other parties' adapters ([`crate::http_party`]).
//!
//! # Which rail
//! The configuration names the rail ([`HttpRailConfig::rail`]): one adapter per rail, each
//! with its own base URL and breaker. An order in a currency the rail does not carry
//! ([`RailId::carries`]: SEPA is euro only) is refused before anything is sent.

use std::sync::Arc;

use async_trait::async_trait;
use bp_core::clock::{Clock, SystemClock};
use bp_core::external::{
    BackOff, CallError, CallKey, NotSent, PaymentRail, RailAnswer, RailId, RailOrder, RailStatus, ReasonCode, Refusal,
};
use bp_core::iso20022::{MESSAGE_BYTES_MAX, pacs002, pacs008};
use bp_core::random::{OsRandomness, Randomness};
use reqwest::{StatusCode, Url, header};

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::contract::{IDEMPOTENCY_KEY_HEADER, ORDERS_PATH, PROBLEM_ORDER_NOT_FOUND, PROBLEM_REFUSED, XML};
pub use crate::http_party::{ATTEMPTS_MAX_LIMIT, ConfigError};
use crate::http_party::{Caller, HttpPartyConfig, RetryLost, is_problem, malformed, refusal};

/// How to reach a rail and how patiently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRailConfig {
    /// Which rail it is: its breaker, its logs and metrics, and the currencies it carries.
    pub rail: RailId,
    /// The rail's base URL (`https://rail.example/v1/`); orders are under `{base}/orders`.
    pub base_url: Url,
    /// Longest wait for a connection (TCP and TLS), in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait for a whole attempt, answer body included, in milliseconds.
    pub request_timeout_ms: u64,
    /// Attempts per call, the first included (1 to [`ATTEMPTS_MAX_LIMIT`]).
    pub attempts_max: u32,
    /// The delays between attempts.
    pub retry_back_off: BackOff,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
}

impl HttpRailConfig {
    /// The SEPA credit-transfer rail at `base_url`, with [`HttpRailConfig::for_rail`]'s
    /// defaults.
    pub fn new(base_url: Url) -> Self {
        Self::for_rail(RailId::SepaCreditTransfer, base_url)
    }

    /// The rail `rail` at `base_url`: connect within 2 s, answer within 10 s, 3 attempts
    /// 200 ms to 2 s apart, the breaker's defaults.
    pub fn for_rail(rail: RailId, base_url: Url) -> Self {
        let party = HttpPartyConfig::new(base_url);
        Self {
            rail,
            base_url: party.base_url,
            connect_timeout_ms: party.connect_timeout_ms,
            request_timeout_ms: party.request_timeout_ms,
            attempts_max: party.attempts_max,
            retry_back_off: party.retry_back_off,
            breaker: party.breaker,
        }
    }

    /// Refuses zero timeouts, unbounded attempts, a base URL that is not http(s).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.party().validate()
    }

    /// How to reach the rail, as every party is reached.
    fn party(&self) -> HttpPartyConfig {
        HttpPartyConfig {
            base_url: self.base_url.clone(),
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            attempts_max: self.attempts_max,
            retry_back_off: self.retry_back_off,
            breaker: self.breaker,
        }
    }
}

/// The rail over HTTP; see the module documentation.
#[derive(Debug)]
pub struct HttpRail {
    rail: RailId,
    /// The base URL, ending with `/`.
    base: Url,
    orders_url: Url,
    caller: Caller,
    clock: Arc<dyn Clock>,
}

impl HttpRail {
    /// The adapter with the system's clock and the operating system's randomness.
    pub fn new(config: HttpRailConfig) -> Result<Self, ConfigError> {
        Self::with_clock_and_random(config, Arc::new(SystemClock), Arc::new(OsRandomness))
    }

    /// The adapter with an injected clock (the pacs.008's creation time, the breaker's
    /// cool-down) and randomness (the retries' jitter).
    pub fn with_clock_and_random(
        config: HttpRailConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Randomness>,
    ) -> Result<Self, ConfigError> {
        let party = config.party();
        let caller = Caller::new(config.rail.name(), &party, MESSAGE_BYTES_MAX, clock.clone(), random)?;
        let base = party.base();
        let orders_url = base.join(ORDERS_PATH).map_err(|_| ConfigError("base_url cannot hold a path"))?;
        Ok(Self { rail: config.rail, base, orders_url, caller, clock })
    }

    /// The circuit breaker, for its state and counters.
    pub fn breaker(&self) -> &CircuitBreaker {
        self.caller.breaker()
    }

    /// A 4xx refusal of the contract, or else an answer outside it.
    fn refused_or_malformed(&self, key: &CallKey, status: StatusCode, body: &[u8]) -> CallError {
        refusal(status, body, PROBLEM_REFUSED).unwrap_or_else(|| self.caller.outside_contract(key, status))
    }
}

/// The answer a pacs.002 body gives for `key`.
fn report_answer(body: &[u8], key: &CallKey) -> Result<RailAnswer, CallError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let report = pacs002::parse(text).map_err(|_| malformed())?;
    report.answer_for(key).ok_or_else(malformed)
}

#[async_trait]
impl PaymentRail for HttpRail {
    fn id(&self) -> RailId {
        self.rail
    }

    async fn submit(&self, order: &RailOrder, key: &CallKey) -> Result<RailAnswer, CallError> {
        let currency = order.amount.currency();
        if !self.rail.carries(currency) {
            // The rail would refuse it: nothing is sent, and nothing ever will be.
            tracing::error!(rail = self.rail.name(), %key, %currency, "the rail does not carry this currency");
            return Err(CallError::Refused(Refusal { code: Some(ReasonCode::currency_not_allowed()) }));
        }
        // Built once: every retry of this call sends the very same bytes.
        let body = match pacs008::build(order, key, self.clock.now()) {
            Ok(xml) => xml,
            Err(e) => {
                // It can never be sent: nothing happened at the rail, and nothing will.
                tracing::error!(rail = self.rail.name(), %key, error = %e, "order cannot be written as pacs.008");
                return Err(CallError::Refused(Refusal { code: None }));
            }
        };
        let request = || {
            self.caller
                .client()
                .post(self.orders_url.clone())
                .header(header::CONTENT_TYPE, XML)
                .header(header::ACCEPT, XML)
                .header(IDEMPOTENCY_KEY_HEADER, key.as_str())
                .body(body.clone())
        };
        let classify = |status: StatusCode, body: &[u8]| match status {
            StatusCode::OK | StatusCode::ACCEPTED => report_answer(body, key),
            _ => Err(self.refused_or_malformed(key, status, body)),
        };
        self.caller.call(key, &request, RetryLost::No, &classify).await
    }

    async fn status(&self, key: &CallKey) -> Result<RailStatus, CallError> {
        // A key is only letters, digits and '-': it needs no escaping in a path.
        let url = self.base.join(&format!("{ORDERS_PATH}/{}", key.as_str()));
        let Ok(url) = url else { return Err(CallError::NotSent(NotSent::NoConnection)) };
        let request = || self.caller.client().get(url.clone()).header(header::ACCEPT, XML);
        let classify = |status: StatusCode, body: &[u8]| match status {
            StatusCode::OK => report_answer(body, key).map(|answer| RailStatus::Known { answer }),
            StatusCode::NOT_FOUND if is_problem(body, PROBLEM_ORDER_NOT_FOUND) => Ok(RailStatus::NotFound),
            _ => Err(self.refused_or_malformed(key, status, body)),
        };
        self.caller.call(key, &request, RetryLost::Yes, &classify).await
    }
}
