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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bp_core::clock::{Clock, SystemClock};
use bp_core::external::{
    BackOff, CallError, CallKey, NotSent, PaymentRail, RailAnswer, RailId, RailOrder, RailStatus, ReasonCode, Refusal,
    Unknown,
};
use bp_core::iso20022::{MESSAGE_BYTES_MAX, pacs002, pacs008};
use bp_core::random::{OsRandomness, Randomness};
use reqwest::{StatusCode, Url, header};

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::contract::{IDEMPOTENCY_KEY_HEADER, ORDERS_PATH, PROBLEM_ORDER_NOT_FOUND, PROBLEM_REFUSED, Problem, XML};

/// Most attempts of one call allowed in a configuration.
pub const ATTEMPTS_MAX_LIMIT: u32 = 10;

/// How to reach a rail and how patiently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRailConfig {
    /// Which rail it is.
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
    /// The SEPA credit-transfer rail at `base_url`: connect within 2 s, answer within 10 s, 3
    /// attempts 200 ms to 2 s apart, the breaker's defaults.
    pub fn new(base_url: Url) -> Self {
        Self {
            rail: RailId::SepaCreditTransfer,
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
}

/// A configuration that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rail configuration: {0}")]
pub struct ConfigError(&'static str);

/// The rail over HTTP; see the module documentation.
#[derive(Debug)]
pub struct HttpRail {
    config: HttpRailConfig,
    /// The base URL, ending with `/`.
    base: Url,
    orders_url: Url,
    client: reqwest::Client,
    breaker: CircuitBreaker,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Randomness>,
}

/// One attempt's end.
enum Attempt {
    /// An answer, its body read (bounded).
    Answered { status: StatusCode, body: Vec<u8> },
    /// No connection was made: nothing was sent.
    NotConnected,
    /// The request may have been received.
    Lost(Unknown),
}

/// What a call does with an answer that is not a 5xx/429.
type Classify<'a, T> = &'a (dyn Fn(StatusCode, &[u8]) -> Result<T, CallError> + Sync);

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
        config.validate()?;
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let orders_url = base.join(ORDERS_PATH).map_err(|_| ConfigError("base_url cannot hold a path"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            // A redirect is outside the contract: it is read as an answer we do not understand.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| ConfigError("the HTTP client cannot be built"))?;
        let breaker = CircuitBreaker::new(config.rail.name(), config.breaker, clock.clone());
        Ok(Self { config, base, orders_url, client, breaker, clock, random })
    }

    /// The circuit breaker, for its state and counters.
    pub fn breaker(&self) -> &CircuitBreaker {
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
                Ok(Some(chunk)) if body.len() + chunk.len() > MESSAGE_BYTES_MAX => {
                    return Attempt::Answered { status, body: b"(answer too large)".to_vec() };
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => return Attempt::Answered { status, body },
                Err(e) if e.is_timeout() => return Attempt::Lost(Unknown::Timeout),
                Err(_) => return Attempt::Lost(Unknown::ConnectionLost),
            }
        }
    }

    /// Runs one call: attempts `request` through the breaker, retrying as the module
    /// documentation says, and classifies the answer with `classify`.
    async fn call<T>(
        &self,
        key: &CallKey,
        request: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        retry_when_lost: RetryLost,
        classify: Classify<'_, T>,
    ) -> Result<T, CallError> {
        let mut maybe_sent: Option<Unknown> = None;
        let mut last = CallError::NotSent(NotSent::NoConnection);
        for attempt in 0..self.config.attempts_max {
            if attempt > 0 {
                let delay_ms = self.config.retry_back_off.delay_ms(attempt - 1, self.random_u64());
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
                    tracing::warn!(rail = self.config.rail.name(), %key, attempt, status = status.as_u16(), body_len = body.len(), "rail answered an error");
                }
                Attempt::Answered { status, body } => {
                    self.breaker.record_success();
                    return classify(status, &body);
                }
                Attempt::NotConnected => {
                    self.breaker.record_failure();
                    last = CallError::NotSent(NotSent::NoConnection);
                    tracing::warn!(rail = self.config.rail.name(), %key, attempt, "rail not reachable");
                }
                Attempt::Lost(unknown) => {
                    self.breaker.record_failure();
                    maybe_sent = Some(unknown);
                    last = CallError::Unknown(unknown);
                    tracing::warn!(rail = self.config.rail.name(), %key, attempt, error = %unknown, "rail call lost");
                    if retry_when_lost == RetryLost::No {
                        break;
                    }
                }
            }
        }
        match (last, maybe_sent) {
            // An earlier attempt may have reached the rail: whatever came after, it is unknown.
            (CallError::NotSent(_), Some(unknown)) => Err(CallError::Unknown(unknown)),
            (last, _) => Err(last),
        }
    }
}

/// Whether a call retries after a timeout or a connection lost after sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RetryLost {
    /// A read: asking again is harmless.
    Yes,
    /// A submission: ask for the status instead.
    No,
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

fn malformed() -> CallError {
    CallError::Unknown(Unknown::MalformedAnswer)
}

/// The problem document of a 4xx, when it is one.
fn problem(body: &[u8]) -> Option<Problem> {
    serde_json::from_slice(body).ok()
}

/// A 4xx that refuses the request, with its reason code (an unreadable code is dropped: the
/// refusal stands).
fn refusal(status: StatusCode, body: &[u8]) -> Option<CallError> {
    let p = problem(body).filter(|p| status.is_client_error() && p.kind == PROBLEM_REFUSED)?;
    let code = p.reason.as_deref().and_then(|c| ReasonCode::parse(c).ok());
    Some(CallError::Refused(Refusal { code }))
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
        self.config.rail
    }

    async fn submit(&self, order: &RailOrder, key: &CallKey) -> Result<RailAnswer, CallError> {
        // Built once: every retry of this call sends the very same bytes.
        let body = match pacs008::build(order, key, self.clock.now()) {
            Ok(xml) => xml,
            Err(e) => {
                // It can never be sent: nothing happened at the rail, and nothing will.
                tracing::error!(rail = self.config.rail.name(), %key, error = %e, "order cannot be written as pacs.008");
                return Err(CallError::Refused(Refusal { code: None }));
            }
        };
        let request = || {
            self.client
                .post(self.orders_url.clone())
                .header(header::CONTENT_TYPE, XML)
                .header(header::ACCEPT, XML)
                .header(IDEMPOTENCY_KEY_HEADER, key.as_str())
                .body(body.clone())
        };
        let classify = |status: StatusCode, body: &[u8]| {
            match status {
            StatusCode::OK | StatusCode::ACCEPTED => report_answer(body, key),
            _ => Err(refusal(status, body).unwrap_or_else(|| {
                tracing::warn!(rail = self.config.rail.name(), %key, status = status.as_u16(), "answer outside the contract");
                malformed()
            })),
        }
        };
        self.call(key, &request, RetryLost::No, &classify).await
    }

    async fn status(&self, key: &CallKey) -> Result<RailStatus, CallError> {
        // A key is only letters, digits and '-': it needs no escaping in a path.
        let url = self.base.join(&format!("{ORDERS_PATH}/{}", key.as_str()));
        let Ok(url) = url else { return Err(CallError::NotSent(NotSent::NoConnection)) };
        let request = || self.client.get(url.clone()).header(header::ACCEPT, XML);
        let classify = |status: StatusCode, body: &[u8]| {
            match status {
            StatusCode::OK => report_answer(body, key).map(|answer| RailStatus::Known { answer }),
            StatusCode::NOT_FOUND if problem(body).is_some_and(|p| p.kind == PROBLEM_ORDER_NOT_FOUND) => {
                Ok(RailStatus::NotFound)
            }
            _ => Err(refusal(status, body).unwrap_or_else(|| {
                tracing::warn!(rail = self.config.rail.name(), %key, status = status.as_u16(), "answer outside the contract");
                malformed()
            })),
        }
        };
        self.call(key, &request, RetryLost::Yes, &classify).await
    }
}
