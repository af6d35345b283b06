//! The simulator of the outside parties: the payment rails, the FX provider ([`FxRules`]) and
//! the loan provider ([`LoanRules`]) speaking their HTTP contracts on one loopback listener, for
//! development mode and tests, so that the real HTTP adapters ([`crate::HttpRail`],
//! [`crate::HttpFxProvider`], [`crate::HttpLoanProvider`]) are the code path even offline. It is
//! none of these parties: it keeps everything in memory, and it moves no money anywhere.
//!
//! Each rail has its own base URL ([`SimulatorHandle::rail_base_url`]): SEPA at the root
//! (`/orders`), the correspondent under `/correspondent/` (`/correspondent/orders`), so that
//! the server runs one [`crate::HttpRail`] per rail against one simulator. The FX and loan
//! providers are at the root ([`SimulatorHandle::base_url`]): `/fx/quotes`, `/loans/decisions`.
//!
//! - `POST /orders` (a pacs.008, `Idempotency-Key`): the order is kept under its key; after
//!   `answer_delay_ms` it answers `202` with a pacs.002 (the same key and the same order again:
//!   `200` with the very same report; the same key with another order: `409`; an unreadable
//!   one: `400` refused, `FF01`; a currency the rail does not carry: `400` refused, `AM03` —
//!   SEPA takes euro only, the correspondent any currency).
//! - `GET /orders/{key}`: a pacs.002 with the order's status now, or `404` order-not-found.
//! - Outcomes follow [`OutcomeRules`], by amount: cents equal to `reject_cents` → `RJCT` with
//!   `reject_reason`; at least `pending_from_minor` → `PDNG`, settled (`ACSC`) after
//!   `settle_after_ms`; otherwise `ACCP`, settled after `settle_after_ms`.
//! - Each status an order takes (the first included) is pushed as a signed webhook (a pacs.002)
//!   to the rail's webhook URL (`webhook_url` for SEPA, `correspondent_webhook_url`), retried
//!   with back-off, signed again on each attempt.
//! - [`SimulatorHandle::originate_incoming`] sends a payment in: a signed pacs.008 to
//!   `incoming_url`.
//!
//! Ids and retry jitter come from a generator seeded by `seed`, so a run replays; development
//! mode should seed it from the clock, or a restart repeats the incoming payments' ids (which
//! the bank then rightly credits once).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod fx;
mod loans;

pub use fx::{FX_FEE_RATE, FX_RATES_FROM_EUR, FxRules, INVERSE_RATE_DECIMALS, QUOTE_TTL_S_MAX};
pub use loans::{LOAN_DECLINE_WORD, LOAN_FEE_RATE, LOAN_RATE_BANDS, LoanRules};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bp_core::clock::{Clock, SystemClock};
use bp_core::external::{BackOff, Bic, CallKey, ExternalAccount, RailId, RailOrder, ReasonCode};
use bp_core::iso20022::pacs002::{self, NewStatusReport, Reported, Status};
use bp_core::iso20022::pacs008::{self, CreditTransferTx};
use bp_core::iso20022::{Iso20022Error, MESSAGE_BYTES_MAX};
use bp_core::money::Money;
use bp_core::random::{Randomness, SeededRandomness};
use reqwest::Url;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::contract::{
    IDEMPOTENCY_KEY_HEADER, JSON, PROBLEM_JSON, PROBLEM_KEY_CONFLICT, PROBLEM_ORDER_NOT_FOUND, PROBLEM_REFUSED,
    Problem, SIGNATURE_HEADER, XML,
};
use crate::webhook::{WebhookSecret, signature_header};

/// How the simulated rail decides, by amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeRules {
    /// Amounts whose minor units end in these two digits are rejected (13: `12.13` is).
    pub reject_cents: i64,
    /// The reason given for a rejection.
    pub reject_reason: ReasonCode,
    /// Amounts of at least this many minor units stay pending until they settle.
    pub pending_from_minor: i64,
    /// How long after it is received an order settles, in milliseconds.
    pub settle_after_ms: u64,
}

impl Default for OutcomeRules {
    /// `x.13` rejected with `AC04`; from 10,000.00 pending; settled after 5 s.
    fn default() -> Self {
        Self {
            reject_cents: 13,
            reject_reason: ReasonCode::closed_account(),
            pending_from_minor: 1_000_000,
            settle_after_ms: 5_000,
        }
    }
}

impl OutcomeRules {
    /// The statuses an order of `amount` takes: the first at once, the second (if any) after
    /// `settle_after_ms`.
    fn plan(&self, amount: Money) -> (Reported, Option<Reported>) {
        let reported = |status, reason| Reported { status, reason };
        let settled = Some(reported(Status::Settled, None));
        let minor = amount.amount_minor();
        if minor.rem_euclid(100) == self.reject_cents {
            (reported(Status::Rejected, Some(self.reject_reason.clone())), None)
        } else if minor >= self.pending_from_minor {
            (reported(Status::Pending, None), settled)
        } else {
            (reported(Status::Accepted, None), settled)
        }
    }
}

/// The simulator's configuration.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Where to listen (a loopback address; port 0 picks a free one).
    pub listen: SocketAddr,
    /// How long it takes to answer an order, in milliseconds.
    pub answer_delay_ms: u64,
    /// How orders end.
    pub rules: OutcomeRules,
    /// Where the SEPA rail's status webhooks go (none: not sent).
    pub webhook_url: Option<Url>,
    /// Where the correspondent rail's status webhooks go (none: not sent).
    pub correspondent_webhook_url: Option<Url>,
    /// Where incoming payments go (none: [`SimulatorHandle::originate_incoming`] refuses).
    pub incoming_url: Option<Url>,
    /// The secret webhooks and incoming payments are signed with.
    pub webhook_secret: WebhookSecret,
    /// Deliveries of one webhook, the first included.
    pub webhook_attempts_max: u32,
    /// The delays between deliveries.
    pub webhook_back_off: BackOff,
    /// The seed of ids and jitter.
    pub seed: u64,
    /// The simulated paying bank's BIC, for incoming payments whose payer has none.
    pub payer_bank: Bic,
    /// Most orders kept, and most quotes and loan decisions (then `503`).
    pub orders_max: usize,
    /// How the FX provider quotes.
    pub fx: FxRules,
    /// How the loan provider decides.
    pub loans: LoanRules,
}

impl SimulatorConfig {
    /// On a free loopback port, answering at once, the default rules of every party, no
    /// webhooks.
    pub fn new(webhook_secret: WebhookSecret, seed: u64) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            answer_delay_ms: 0,
            rules: OutcomeRules::default(),
            webhook_url: None,
            correspondent_webhook_url: None,
            incoming_url: None,
            webhook_secret,
            webhook_attempts_max: 5,
            webhook_back_off: BackOff { first_ms: 100, max_ms: 5_000 },
            seed,
            payer_bank: Bic::parse("SIMUDEFFXXX").unwrap_or_else(|_| unreachable!("a valid BIC")),
            orders_max: 100_000,
            fx: FxRules::default(),
            loans: LoanRules::default(),
        }
    }
}

/// What the simulator could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulatorError {
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// No `incoming_url` is configured.
    #[error("no incoming_url configured")]
    NoIncomingUrl,
    /// The message could not be built.
    #[error("message: {0}")]
    Message(#[from] Iso20022Error),
    /// Every delivery failed; the last HTTP status, if one came.
    #[error("not delivered (last status {0:?})")]
    NotDelivered(Option<u16>),
}

/// A payment sent in to the bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingPayment {
    /// The amount (euro).
    pub amount: Money,
    /// The payer, at another bank (its BIC, or the simulator's `payer_bank`).
    pub payer: ExternalAccount,
    /// The bank's customer: one of the bank's IBANs.
    pub payee: ExternalAccount,
    /// Remittance information.
    pub remittance: Option<String>,
}

/// An incoming payment as delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingDelivery {
    /// Its message, end-to-end and transaction id.
    pub key: CallKey,
    /// The bank's HTTP status.
    pub status: u16,
}

/// What makes an order the same order: the transaction, not the message's creation time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(CreditTransferTx);

#[derive(Debug)]
struct Order {
    fingerprint: Fingerprint,
    received: Instant,
    first: Reported,
    then: Option<Reported>,
    /// The first answer, sent again verbatim to a repeated submission.
    first_answer: String,
}

impl Order {
    fn status_at(&self, now: Instant, settle_after: Duration) -> &Reported {
        match &self.then {
            Some(then) if now >= self.received + settle_after => then,
            _ => &self.first,
        }
    }
}

#[derive(Debug)]
struct Shared {
    config: SimulatorConfig,
    /// Each rail's orders, by our key.
    orders: Mutex<HashMap<(RailId, CallKey), Order>>,
    fx: Mutex<fx::Desk>,
    loans: Mutex<loans::Book>,
    tasks: Mutex<JoinSet<()>>,
    random: SeededRandomness,
    clock: SystemClock,
    client: reqwest::Client,
    order_posts: Mutex<u64>,
}

impl Shared {
    fn lock_orders(&self) -> std::sync::MutexGuard<'_, HashMap<(RailId, CallKey), Order>> {
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn random_u64(&self) -> u64 {
        let mut bytes = [0u8; 8];
        self.random.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// A fresh message id: `SIM` and 16 hex digits from the seeded generator.
    fn message_id(&self) -> String {
        format!("SIM{:016X}", self.random_u64())
    }

    fn report(&self, key: &CallKey, status: &Reported) -> Result<String, Iso20022Error> {
        pacs002::build(&NewStatusReport::for_key(key, self.message_id(), self.clock.now(), status.clone()))
    }

    /// Where the status webhooks of `rail`'s orders go.
    fn webhook_url(&self, rail: RailId) -> Option<Url> {
        match rail {
            RailId::SepaCreditTransfer => self.config.webhook_url.clone(),
            RailId::Correspondent => self.config.correspondent_webhook_url.clone(),
            _ => None,
        }
    }

    /// Waits `answer_delay_ms`: every party answers that late.
    async fn answer_delay(&self) {
        tokio::time::sleep(Duration::from_millis(self.config.answer_delay_ms)).await;
    }

    fn settle_after(&self) -> Duration {
        Duration::from_millis(self.config.rules.settle_after_ms)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap what has finished, so that the set stays as small as what is in flight.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// POSTs the message `make` builds, built and signed afresh on each attempt (a new message
    /// id or creation time, a new `t`: a redelivery is never a byte-for-byte replay), until a
    /// 2xx or the last attempt.
    async fn deliver(
        &self,
        url: &Url,
        make: &(dyn Fn() -> Result<String, Iso20022Error> + Sync),
    ) -> Result<u16, SimulatorError> {
        let mut last = None;
        for attempt in 0..self.config.webhook_attempts_max.max(1) {
            if attempt > 0 {
                let delay = self.config.webhook_back_off.delay_ms(attempt - 1, self.random_u64());
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let body = make()?;
            let t = self.clock.now().timestamp();
            let signature = signature_header(t, &[&self.config.webhook_secret], body.as_bytes());
            let sent = self
                .client
                .post(url.clone())
                .header(header::CONTENT_TYPE, XML)
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(r.status().as_u16()),
                Ok(r) => last = Some(r.status().as_u16()),
                Err(_) => {}
            }
            tracing::warn!(attempt, status = ?last, "simulator: delivery failed");
        }
        Err(SimulatorError::NotDelivered(last))
    }
}

/// Starts simulators; see the module documentation.
#[derive(Debug)]
pub struct Simulator;

/// A running simulator.
#[derive(Debug)]
pub struct SimulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Binds `config.listen` and serves the rail's contract there until
    /// [`SimulatorHandle::stop`].
    pub async fn start(config: SimulatorConfig) -> Result<SimulatorHandle, SimulatorError> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SimulatorError::Listen(std::io::Error::other(e)))?;
        let shared = Arc::new(Shared {
            random: SeededRandomness::new(config.seed),
            config,
            orders: Mutex::new(HashMap::new()),
            fx: Mutex::default(),
            loans: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
            clock: SystemClock,
            client,
            order_posts: Mutex::new(0),
        });
        let mut router = Router::new().merge(fx::routes(shared.clone())).merge(loans::routes(shared.clone()));
        for rail in RailId::ALL {
            let rail_routes = rail_routes(RailState { shared: shared.clone(), rail });
            router = match rail_prefix(rail) {
                None => router.merge(rail_routes),
                Some(prefix) => router.nest(&format!("/{prefix}"), rail_routes),
            };
        }
        let router = router.layer(DefaultBodyLimit::max(MESSAGE_BYTES_MAX));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator: server failed");
            }
        });
        tracing::info!(%addr, "simulator of the outside parties listening");
        Ok(SimulatorHandle { addr, shared, shutdown: Some(shutdown), server })
    }
}

impl SimulatorHandle {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://127.0.0.1:<port>/`): the SEPA rail's, the FX provider's and the
    /// loan provider's, for [`crate::HttpRailConfig::new`] and [`crate::HttpPartyConfig::new`].
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).unwrap_or_else(|_| unreachable!("an address is a URL"))
    }

    /// The base URL of `rail`, for [`crate::HttpRailConfig::for_rail`]: the root for SEPA,
    /// `/correspondent/` for the correspondent.
    pub fn rail_base_url(&self, rail: RailId) -> Url {
        let base = self.base_url();
        match rail_prefix(rail) {
            None => base,
            Some(prefix) => {
                base.join(&format!("{prefix}/")).unwrap_or_else(|_| unreachable!("a rail's name is a path"))
            }
        }
    }

    /// How many orders it keeps (distinct keys, every rail).
    pub fn orders_len(&self) -> usize {
        self.shared.lock_orders().len()
    }

    /// How many orders of `rail` it keeps.
    pub fn rail_orders_len(&self, rail: RailId) -> usize {
        self.shared.lock_orders().keys().filter(|(r, _)| *r == rail).count()
    }

    /// How many quotes it gave (distinct keys).
    pub fn quotes_len(&self) -> usize {
        self.shared.fx.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// How many loan applications it decided (distinct keys).
    pub fn decisions_len(&self) -> usize {
        self.shared.loans.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// How many order submissions it received (repeats included).
    pub fn order_posts(&self) -> u64 {
        *self.shared.order_posts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `payment` in to the bank: a pacs.008 signed like a webhook, POSTed to
    /// `incoming_url` until the bank answers 2xx (or the last attempt).
    pub async fn originate_incoming(&self, payment: IncomingPayment) -> Result<IncomingDelivery, SimulatorError> {
        let url = self.shared.config.incoming_url.clone().ok_or(SimulatorError::NoIncomingUrl)?;
        let key = CallKey::parse(&self.shared.message_id()).unwrap_or_else(|_| unreachable!("SIM + hex is a key"));
        let mut payer = payment.payer;
        payer.bic = payer.bic.or_else(|| Some(self.shared.config.payer_bank.clone()));
        let order = RailOrder {
            amount: payment.amount,
            debtor: payer,
            creditor: payment.payee,
            remittance: payment.remittance,
            requested_at: self.shared.clock.now(),
        };
        let make = || pacs008::build(&order, &key, self.shared.clock.now());
        let status = self.shared.deliver(&url, &make).await?;
        Ok(IncomingDelivery { key, status })
    }

    /// Stops serving and sending webhooks, and waits for the server to close.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).abort_all();
        let _ = (&mut self.server).await;
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.server.abort();
        self.shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).abort_all();
    }
}

/// The path prefix of `rail`'s orders: none for SEPA (where it has always been), the rail's
/// name for every other.
fn rail_prefix(rail: RailId) -> Option<&'static str> {
    (rail != RailId::SepaCreditTransfer).then(|| rail.name())
}

/// What a rail's handlers know: the simulator, and which rail they serve.
#[derive(Clone, Debug)]
struct RailState {
    shared: Arc<Shared>,
    rail: RailId,
}

fn rail_routes(state: RailState) -> Router {
    Router::new().route("/orders", post(submit)).route("/orders/{key}", get(status)).with_state(state)
}

fn problem(status: StatusCode, kind: &str, title: &str, reason: Option<&str>) -> Response {
    let body = serde_json::to_vec(&Problem::new(kind, title, reason)).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], body).into_response()
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(XML))], body).into_response()
}

fn refused(reason: &str, title: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, PROBLEM_REFUSED, title, Some(reason))
}

/// The one transaction of a pacs.008 to `rail`, or why it is refused (reason code, title).
fn read_order(body: &str, rail: RailId) -> Result<CreditTransferTx, (&'static str, &'static str)> {
    let message = pacs008::parse(body).map_err(|_| ("FF01", "not a pacs.008.001.08"))?;
    let [tx] =
        <[CreditTransferTx; 1]>::try_from(message.transactions).map_err(|_| ("FF01", "one transaction per message"))?;
    if !rail.carries(tx.amount.currency()) {
        return Err(("AM03", "a currency this rail does not carry"));
    }
    Ok(tx)
}

/// The key in the `Idempotency-Key` header, if there is a valid one.
fn idempotency_key(headers: &HeaderMap) -> Option<CallKey> {
    headers.get(IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok()).and_then(|k| CallKey::parse(k).ok())
}

/// Takes an order, then answers after `answer_delay_ms`: the order is kept whether or not the
/// caller is still there to read the answer (as a real rail that received it would).
async fn submit(State(state): State<RailState>, headers: HeaderMap, body: String) -> Response {
    let answer = take_order(&state.shared, state.rail, &headers, &body);
    state.shared.answer_delay().await;
    answer
}

fn take_order(shared: &Arc<Shared>, rail: RailId, headers: &HeaderMap, body: &str) -> Response {
    *shared.order_posts.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    let Some(key) = idempotency_key(headers) else {
        return refused("FF01", "an Idempotency-Key of 1 to 35 letters, digits or '-'");
    };
    let tx = match read_order(body, rail) {
        Ok(tx) => tx,
        Err((reason, title)) => return refused(reason, title),
    };
    let fingerprint = Fingerprint(tx);
    let mut orders = shared.lock_orders();
    if let Some(order) = orders.get(&(rail, key.clone())) {
        if order.fingerprint != fingerprint {
            return problem(StatusCode::CONFLICT, PROBLEM_KEY_CONFLICT, "key used with another order", None);
        }
        return xml(StatusCode::OK, order.first_answer.clone());
    }
    if orders.len() >= shared.config.orders_max {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "about:blank", "too many orders", None);
    }
    let (first, then) = shared.config.rules.plan(fingerprint.0.amount);
    let first_answer = match shared.report(&key, &first) {
        Ok(report) => report,
        Err(_) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", "report not built", None),
    };
    let order = Order { fingerprint, received: Instant::now(), first: first.clone(), then: then.clone(), first_answer };
    let answer = order.first_answer.clone();
    orders.insert((rail, key.clone()), order);
    drop(orders);
    if let Some(url) = shared.webhook_url(rail) {
        let task_shared = shared.clone();
        shared.spawn(async move { push_statuses(task_shared, url, key, first, then).await });
    }
    xml(StatusCode::ACCEPTED, answer)
}

/// Pushes the order's first status, and its second when it comes.
async fn push_statuses(shared: Arc<Shared>, url: Url, key: CallKey, first: Reported, then: Option<Reported>) {
    let mut statuses = vec![(Duration::ZERO, first)];
    statuses.extend(then.map(|t| (shared.settle_after(), t)));
    let received = Instant::now();
    for (after, status) in statuses {
        tokio::time::sleep_until(received + after).await;
        let make = || shared.report(&key, &status);
        if let Err(e) = shared.deliver(&url, &make).await {
            tracing::warn!(%key, error = %e, "simulator: status webhook given up");
        }
    }
}

async fn status(State(RailState { shared, rail }): State<RailState>, Path(key): Path<String>) -> Response {
    let Ok(key) = CallKey::parse(&key) else {
        return problem(StatusCode::NOT_FOUND, PROBLEM_ORDER_NOT_FOUND, "no such order", None);
    };
    let now = Instant::now();
    let status =
        shared.lock_orders().get(&(rail, key.clone())).map(|o| o.status_at(now, shared.settle_after()).clone());
    match status {
        None => problem(StatusCode::NOT_FOUND, PROBLEM_ORDER_NOT_FOUND, "no such order", None),
        Some(status) => match shared.report(&key, &status) {
            Ok(report) => xml(StatusCode::OK, report),
            Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", "report not built", None),
        },
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(body) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))], body).into_response(),
        Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", "answer not written", None),
    }
}
