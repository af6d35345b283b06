//! What every HTTP adapter of an outside party shares, written once so that the rail, the FX
//! provider and the loan provider cannot drift apart: the configuration of how to reach a
//! party and how patiently ([`HttpPartyConfig`]), and the caller that runs one call through
//! the circuit breaker with bounded, jittered retries and turns each attempt's end into an
//! answer or a `CallError` (crate-private: each adapter classifies its own answers).
//!
//! # How an attempt becomes a `CallError`
//! - No connection made (refused, no route, connect timeout): nothing was sent → `NotSent`.
//! - A 5xx or 429: retried with the same key and the very same body; on the last attempt
//!   `Unknown(ServerError)`.
//! - A timeout or a connection lost after the request left → `Unknown`, retried only when the
//!   call is a read (a status query, a quote read by id).
//! - Any other answer proves the party is up: the adapter's `classify` decides what it means
//!   (an answer, a refusal of the contract's problem type, or `Unknown(MalformedAnswer)`).
//!
//! Once an attempt may have reached the party, the call can no longer end as `NotSent`. Every
//! attempt passes the circuit breaker; while it is open, calls fail fast as
//! `NotSent::CircuitOpen`.

use std::sync::Arc;
use std::time::Duration;

use bp_core::clock::Clock;
use bp_core::external::{BackOff, CallError, NotSent, ReasonCode, Refusal, Unknown};
use bp_core::random::Randomness;
use reqwest::{StatusCode, Url};

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::contract::Problem;

/// Most attempts of one call allowed in a configuration.
pub const ATTEMPTS_MAX_LIMIT: u32 = 10;

/// How to reach an outside party over HTTP and how patiently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPartyConfig {
    /// The party's base URL (`https://fx.example/v1/`); the contract's paths are under it.
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

impl HttpPartyConfig {
    /// The party at `base_url`: connect within 2 s, answer within 10 s, 3 attempts 200 ms to
    /// 2 s apart, the breaker's defaults (the rail's defaults).
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            attempts_max: 3,
            retry_back_off: BackOff { first_ms: 200, max_ms: 2_000 },
            breaker: BreakerConfig::default(),
        }
    }

    /// Refuses zero timeouts, unbounded attempts, a base URL that is not http(s).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &'static str| Err(ConfigError(why));
        if !matches!(self.base_url.scheme(), "http" | "https") || self.base_url.cannot_be_a_base() {
            return bad("base_url must be an http or https URL");
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return bad("timeouts must be at least 1 ms");
        }
        if !(1..=ATTEMPTS_MAX_LIMIT).contains(&self.attempts_max) {
            return bad("attempts_max must be 1 to ATTEMPTS_MAX_LIMIT (10)");
        }
        self.retry_back_off.validate().map_err(ConfigError)?;
        self.breaker.validate().map_err(ConfigError)
    }

    /// The base URL, ending with `/`, so that the contract's relative paths join under it.
    pub(crate) fn base(&self) -> Url {
        let mut base = self.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base
    }
}

/// A configuration that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("outside party configuration: {0}")]
pub struct ConfigError(pub(crate) &'static str);

/// Whether a call retries after a timeout or a connection lost after sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryLost {
    /// A read: asking again is harmless.
    Yes,
    /// A submission: the caller asks for the status (or the customer asks again with the same
    /// key) rather than sending again at once to a party that is slow.
    No,
}

/// What a call does with an answer that is not a 5xx/429.
pub(crate) type Classify<'a, T> = &'a (dyn Fn(StatusCode, &[u8]) -> Result<T, CallError> + Sync);

/// One attempt's end.
enum Attempt {
    /// An answer, its body read (bounded).
    Answered { status: StatusCode, body: Vec<u8> },
    /// No connection was made: nothing was sent.
    NotConnected,
    /// The request may have been received.
    Lost(Unknown),
}

/// Runs calls to one party; see the module documentation.
#[derive(Debug)]
pub(crate) struct Caller {
    party: &'static str,
    attempts_max: u32,
    retry_back_off: BackOff,
    body_bytes_max: usize,
    client: reqwest::Client,
    breaker: CircuitBreaker,
    random: Arc<dyn Randomness>,
}

impl Caller {
    /// A caller of `party` (its name in logs and metrics) configured by `config`, reading
    /// answers of at most `body_bytes_max` bytes (a longer one is read as unreadable).
    pub(crate) fn new(
        party: &'static str,
        config: &HttpPartyConfig,
        body_bytes_max: usize,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Randomness>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            // A redirect is outside every contract: it is read as an answer we do not understand.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| ConfigError("the HTTP client cannot be built"))?;
        Ok(Self {
            party,
            attempts_max: config.attempts_max,
            retry_back_off: config.retry_back_off,
            body_bytes_max,
            client,
            breaker: CircuitBreaker::new(party, config.breaker, clock),
            random,
        })
    }

    /// The HTTP client, to build requests with.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The circuit breaker.
    pub(crate) fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    fn random_u64(&self) -> u64 {
        let mut bytes = [0u8; 8];
        self.random.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    async fn attempt(&self, request: reqwest::RequestBuilder) -> Attempt {
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return transport_error(&e),
        };
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > self.body_bytes_max => {
                    return Attempt::Answered { status, body: b"(answer too large)".to_vec() };
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => return Attempt::Answered { status, body },
                Err(e) if e.is_timeout() => return Attempt::Lost(Unknown::Timeout),
                Err(_) => return Attempt::Lost(Unknown::ConnectionLost),
            }
        }
    }

    /// Runs one call about `key` (for logs): attempts `request` through the breaker, retrying
    /// as the module documentation says, and classifies the answer with `classify`.
    pub(crate) async fn call<T>(
        &self,
        key: &(dyn std::fmt::Display + Sync),
        request: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        retry_when_lost: RetryLost,
        classify: Classify<'_, T>,
    ) -> Result<T, CallError> {
        let party = self.party;
        let mut maybe_sent: Option<Unknown> = None;
        let mut last = CallError::NotSent(NotSent::NoConnection);
        for attempt in 0..self.attempts_max {
            if attempt > 0 {
                let delay_ms = self.retry_back_off.delay_ms(attempt - 1, self.random_u64());
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            if let Err(open) = self.breaker.try_acquire() {
                last = CallError::NotSent(open);
                break;
            }
            match self.attempt(request()).await {
                Attempt::Answered { status, body }
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    self.breaker.record_failure();
                    let unknown = Unknown::ServerError { status: status.as_u16() };
                    maybe_sent = Some(unknown);
                    last = CallError::Unknown(unknown);
                    tracing::warn!(party, %key, attempt, status = status.as_u16(), body_len = body.len(), "party answered an error");
                }
                Attempt::Answered { status, body } => {
                    self.breaker.record_success();
                    return classify(status, &body);
                }
                Attempt::NotConnected => {
                    self.breaker.record_failure();
                    last = CallError::NotSent(NotSent::NoConnection);
                    tracing::warn!(party, %key, attempt, "party not reachable");
                }
                Attempt::Lost(unknown) => {
                    self.breaker.record_failure();
                    maybe_sent = Some(unknown);
                    last = CallError::Unknown(unknown);
                    tracing::warn!(party, %key, attempt, error = %unknown, "party call lost");
                    if retry_when_lost == RetryLost::No {
                        break;
                    }
                }
            }
        }
        match (last, maybe_sent) {
            // An earlier attempt may have reached the party: whatever came after, it is unknown.
            (CallError::NotSent(_), Some(unknown)) => Err(CallError::Unknown(unknown)),
            (last, _) => Err(last),
        }
    }

    /// The error of an answer outside the contract, logged (status only: a body may carry
    /// personal data).
    pub(crate) fn outside_contract(&self, key: &(dyn std::fmt::Display + Sync), status: StatusCode) -> CallError {
        tracing::warn!(party = self.party, %key, status = status.as_u16(), "answer outside the contract");
        malformed()
    }
}

fn transport_error(e: &reqwest::Error) -> Attempt {
    // A connect error (refused, no route, DNS, TLS handshake, connect timeout) happens before
    // any byte of the request is written.
    if e.is_connect() {
        Attempt::NotConnected
    } else if e.is_timeout() {
        Attempt::Lost(Unknown::Timeout)
    } else {
        Attempt::Lost(Unknown::ConnectionLost)
    }
}

/// An answer we cannot read: the party may have acted, so it is unknown, never refused.
pub(crate) fn malformed() -> CallError {
    CallError::Unknown(Unknown::MalformedAnswer)
}

/// The problem document of an answer, when it is one.
pub(crate) fn problem(body: &[u8]) -> Option<Problem> {
    serde_json::from_slice(body).ok()
}

/// Whether `body` is a problem document of type `kind`.
pub(crate) fn is_problem(body: &[u8], kind: &str) -> bool {
    problem(body).is_some_and(|p| p.kind == kind)
}

/// A 4xx that refuses the request with the problem type `refused_kind`, with its reason code
/// (an unreadable code is dropped: the refusal stands).
pub(crate) fn refusal(status: StatusCode, body: &[u8], refused_kind: &str) -> Option<CallError> {
    let p = problem(body).filter(|p| status.is_client_error() && p.kind == refused_kind)?;
    let code = p.reason.as_deref().and_then(|c| ReasonCode::parse(c).ok());
    Some(CallError::Refused(Refusal { code }))
}
