//! The HTTP adapter of bp-core's `LoanProvider`: JSON over reqwest (rustls), following the loan
//! provider's contract ([`crate::contract::loan`], `docs/external-services.md`), with the
//! rail's timeouts, retries, circuit breaker and mapping of outcomes ([`crate::http_party`]).
//!
//! # How an answer becomes a `CallError`
//! - `decide`: `201` (new) or `200` (the same key again) with a decision → the decision; a 4xx
//!   with the problem type `urn:bp:loans:refused` → `Refused` (its reason code).
//! - `status`: `200` with the decision under our key → `Known`; `404` with the type
//!   `urn:bp:loans:decision-not-found` → `NotFound` (never received: it may be sent again with
//!   the same key).
//! - No connection made → `NotSent`; a timeout or a connection lost after sending, a 5xx or 429
//!   on the last attempt, and any answer outside the contract (unreadable JSON, a 404 without
//!   its type, a 409 key conflict, a redirect) → `Unknown`, never `Refused`: the provider may
//!   have decided, and the lifecycle asks `status` with the same key.
//!
//! # Retries
//! As the rail's: a connection not made and a 5xx/429 are retried with the same key and the
//! very same body bytes; `decide` is not sent again after a timeout (the lifecycle asks for
//! the status), `status` is a read and is.
//!
//! The application carries the customer's purpose in their words: it is never logged.

use std::sync::Arc;

use async_trait::async_trait;
use bp_core::clock::{Clock, SystemClock};
use bp_core::external::loan::{DecisionStatus, LoanApplication, LoanDecision, LoanProvider};
use bp_core::external::{CallError, CallKey, NotSent, Refusal};
use bp_core::random::{OsRandomness, Randomness};
use reqwest::{StatusCode, Url, header};

use crate::breaker::CircuitBreaker;
use crate::contract::loan::{Application, DECISIONS_PATH, Decision, PROBLEM_DECISION_NOT_FOUND, PROBLEM_REFUSED};
use crate::contract::{IDEMPOTENCY_KEY_HEADER, JSON, JSON_BYTES_MAX};
use crate::http_party::{Caller, ConfigError, HttpPartyConfig, RetryLost, is_problem, malformed, refusal};

/// The loan provider's name in logs and metrics (the breaker's `party` label).
pub const PARTY: &str = "loans";

/// The loan provider over HTTP; see the module documentation.
#[derive(Debug)]
pub struct HttpLoanProvider {
    /// The base URL, ending with `/`.
    base: Url,
    decisions_url: Url,
    caller: Caller,
}

impl HttpLoanProvider {
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
        let decisions_url = base.join(DECISIONS_PATH).map_err(|_| ConfigError("base_url cannot hold a path"))?;
        Ok(Self { base, decisions_url, caller })
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

/// The decision in `body`.
fn read_decision(body: &[u8]) -> Result<LoanDecision, CallError> {
    serde_json::from_slice::<Decision>(body).map(LoanDecision::from).map_err(|_| malformed())
}

#[async_trait]
impl LoanProvider for HttpLoanProvider {
    async fn decide(&self, application: &LoanApplication, key: &CallKey) -> Result<LoanDecision, CallError> {
        // Written once: every retry of this call sends the very same bytes.
        let Ok(body) = serde_json::to_vec(&Application::from(application)) else {
            return Err(CallError::Refused(Refusal { code: None }));
        };
        let request = || {
            self.caller
                .client()
                .post(self.decisions_url.clone())
                .header(header::CONTENT_TYPE, JSON)
                .header(header::ACCEPT, JSON)
                .header(IDEMPOTENCY_KEY_HEADER, key.as_str())
                .body(body.clone())
        };
        let classify = |status: StatusCode, body: &[u8]| match status {
            StatusCode::OK | StatusCode::CREATED => read_decision(body),
            _ => Err(self.refused_or_malformed(key, status, body)),
        };
        self.caller.call(key, &request, RetryLost::No, &classify).await
    }

    async fn status(&self, key: &CallKey) -> Result<DecisionStatus, CallError> {
        // A key is only letters, digits and '-': it needs no escaping in a path.
        let url = self.base.join(&format!("{DECISIONS_PATH}/{}", key.as_str()));
        let Ok(url) = url else { return Err(CallError::NotSent(NotSent::NoConnection)) };
        let request = || self.caller.client().get(url.clone()).header(header::ACCEPT, JSON);
        let classify = |status: StatusCode, body: &[u8]| match status {
            StatusCode::OK => read_decision(body).map(|decision| DecisionStatus::Known { decision }),
            StatusCode::NOT_FOUND if is_problem(body, PROBLEM_DECISION_NOT_FOUND) => Ok(DecisionStatus::NotFound),
            _ => Err(self.refused_or_malformed(key, status, body)),
        };
        self.caller.call(key, &request, RetryLost::Yes, &classify).await
    }
}
