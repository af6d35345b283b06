//! The server's shared state, the bearer-token extractor every `/v1` route uses, and the
//! security bookkeeping shared by sign-in and SCA: lockout, rate limits and the audit log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::{Operation, SecurityRequirement};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bp_core::clock::Clock;
use bp_core::ids::CustomerId;
use bp_core::security::{AuditEntry, AuditKind, SecurityState, SecurityStore};
use bp_core::{Ledger, Store, Timestamp};
use chrono::Duration;

use crate::auth::crypto::PasswordHasherConfig;
use crate::auth::oauth::Flows;
use crate::auth::tokens::{Caller, External, Keys, Verifier};
use crate::config::Config;
use crate::http::problem::ApiError;

/// Per-customer locks serialising read-modify-write of a customer's security state (stripes).
const CUSTOMER_LOCKS_LEN: usize = 256;

/// Everything the handlers share.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// The issuer URL.
    pub issuer: String,
    /// The ledger.
    pub ledger: Ledger<dyn Store>,
    /// Security records.
    pub security: Arc<dyn SecurityStore>,
    /// Signing keys.
    pub keys: Keys,
    /// Access-token checks.
    pub verifier: Verifier,
    /// The external issuer, when configured.
    pub external: Option<External>,
    /// Password hashing.
    pub hasher: PasswordHasherConfig,
    /// A hash verified for unknown usernames, so that their answer takes as long.
    pub dummy_hash: String,
    /// Sign-in flows and authorization codes in progress.
    pub flows: Flows,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The event bus the relay publishes to: in-process, or Kafka.
    pub bus: Arc<dyn bp_core::bus::EventBus>,
    /// This process's fan-out to its event streams: the bridge subscribes to `bus` once and
    /// forwards every event here.
    pub hub: crate::events::Hub,
    /// Wakes the audit log's tail after an audit write.
    pub audit_waker: tokio::sync::Notify,
    /// How far the audit log's tail has put entries on the hub.
    pub audit_position: std::sync::atomic::AtomicU64,
    /// Wakes the outbox relay after a commit.
    pub relay_waker: Arc<tokio::sync::Notify>,
    /// The outbox relay's counters, once it runs.
    pub relay_stats: std::sync::OnceLock<Arc<bp_notify::relay::RelayStats>>,
    /// Event-stream tickets and the JSON the streams share.
    pub streams: crate::events::Streams,
    rate: Mutex<HashMap<IpAddr, (i64, u32)>>,
    customer_locks: Vec<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl AppState {
    /// State over the given stores and keys.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        security: Arc<dyn SecurityStore>,
        keys: Keys,
        clock: Arc<dyn Clock>,
        external_bus: Option<Arc<dyn bp_core::bus::EventBus>>,
    ) -> Result<Self, String> {
        let issuer = config.issuer();
        let hasher = PasswordHasherConfig::new(config.auth.argon2_memory_kib, config.auth.argon2_iterations)?;
        let dummy_hash = hasher.hash(&crate::auth::crypto::random_token(16))?;
        let verifier = Verifier::new(&keys, issuer.clone(), config.auth.audience.clone());
        let external = config.auth.external.clone().map(External::new);
        let bus = external_bus.unwrap_or_else(|| Arc::new(bp_notify::broadcast::BroadcastBus::default()));
        let hub = crate::events::Hub::new(config.bus.stream_buffer_events);
        Ok(Self {
            issuer,
            ledger: Ledger::new(store),
            security,
            keys,
            verifier,
            external,
            hasher,
            dummy_hash,
            flows: Flows::default(),
            clock,
            bus,
            hub,
            audit_waker: tokio::sync::Notify::new(),
            audit_position: std::sync::atomic::AtomicU64::new(0),
            relay_waker: Arc::new(tokio::sync::Notify::new()),
            relay_stats: std::sync::OnceLock::new(),
            streams: crate::events::Streams::default(),
            rate: Mutex::new(HashMap::new()),
            customer_locks: (0..CUSTOMER_LOCKS_LEN).map(|_| tokio::sync::Mutex::new(())).collect(),
            config,
        })
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Now in seconds since the epoch.
    pub fn now_s(&self) -> u64 {
        u64::try_from(self.now().timestamp()).unwrap_or(0)
    }

    /// When a session signed in at `auth_time` ends, however often it is refreshed:
    /// `auth.session_ttl_s` later.
    pub fn session_end(&self, auth_time: Timestamp) -> Timestamp {
        let ttl_s = i64::try_from(self.config.auth.session_ttl_s).unwrap_or(i64::MAX / 1_000_000);
        auth_time
            .checked_add_signed(chrono::Duration::seconds(ttl_s))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    /// The lock serialising changes of one customer's security state.
    pub async fn lock_customer(&self, customer: CustomerId) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = usize::from(customer.as_uuid().as_bytes()[15]) % CUSTOMER_LOCKS_LEN;
        self.customer_locks[stripe].lock().await
    }

    /// Counts one attempt from `ip` against the per-minute sign-in budget.
    pub fn rate_limit(&self, ip: IpAddr) -> Result<(), ApiError> {
        let minute = self.now().timestamp() / 60;
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if rate.len() > 100_000 {
            rate.retain(|_, (m, _)| *m == minute);
        }
        let entry = rate.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 > self.config.auth.login_attempts_per_minute {
            let retry_after_s = u64::try_from(60 - self.now().timestamp() % 60).unwrap_or(60);
            metrics::counter!("bp_rate_limited_total").increment(1);
            return Err(ApiError::RateLimited { retry_after_s });
        }
        Ok(())
    }

    /// Appends to the audit log; a failure to write it fails the request (no unaudited
    /// security event).
    pub async fn audit(
        &self,
        kind: AuditKind,
        customer: Option<CustomerId>,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        let detail = match detail {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let entry = AuditEntry { position: 0, at: self.now(), kind, customer_id: customer, detail };
        self.security.append_audit(entry).await?;
        self.audit_waker.notify_one();
        let customer_id = customer.map_or_else(|| "-".to_owned(), |c| c.to_string());
        tracing::info!(audit = ?kind, customer = %customer_id, "security event");
        Ok(())
    }

    /// Refuses while the customer is locked out.
    pub fn check_lock(&self, state: &SecurityState) -> Result<(), ApiError> {
        match state.locked_until {
            Some(until) if until > self.now() => {
                let retry_after_s = u64::try_from((until - self.now()).num_seconds().max(1)).unwrap_or(1);
                Err(ApiError::LockedOut { retry_after_s })
            }
            _ => Ok(()),
        }
    }

    /// Records one failed password, second-factor or challenge answer, locking the customer
    /// out after `failures_max` in a row, for longer each time. Call under the customer's lock.
    pub async fn record_failure(&self, customer: CustomerId, what: AuditKind) -> Result<(), ApiError> {
        let mut state = self.security.security_state(customer).await?;
        state.failures = state.failures.saturating_add(1);
        self.audit(what, Some(customer), serde_json::json!({ "failures": state.failures })).await?;
        if state.failures >= self.config.lockout.failures_max {
            let shift = state.lockouts.min(20);
            let lock_s = self.config.lockout.lock_s.saturating_mul(1u64 << shift).min(self.config.lockout.lock_max_s);
            state.locked_until =
                Some(self.now() + Duration::seconds(i64::try_from(lock_s).unwrap_or(i64::MAX / 1_000_000)));
            state.lockouts = state.lockouts.saturating_add(1);
            state.failures = 0;
            metrics::counter!("bp_lockouts_total").increment(1);
            self.audit(AuditKind::LockedOut, Some(customer), serde_json::json!({ "lock_s": lock_s })).await?;
        }
        self.security.put_security_state(customer, state).await?;
        Ok(())
    }
}

/// The caller of a `/v1` route, from its bearer token.
#[derive(Clone, Debug)]
pub struct Auth(pub Caller);

impl Auth {
    /// Refuses unless the token carries `scope`.
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(match scope {
                "accounts" => "the access token lacks the 'accounts' scope",
                "payments" => "the access token lacks the 'payments' scope",
                "profile" => "the access token lacks the 'profile' scope",
                _ => "the access token lacks a required scope",
            }))
        }
    }
}

/// A caller whose token carries the `payments` scope, checked before the body is read.
#[derive(Clone, Debug)]
pub struct Payer(pub Auth);

impl FromRequestParts<Arc<AppState>> for Payer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        auth.require("payments")?;
        Ok(Self(auth))
    }
}

impl OperationInput for Payer {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Auth::operation_input(ctx, operation);
    }
}

/// The bearer token of a request.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized("missing bearer token"))?;
        authenticate(state, token).await.map(Auth)
    }
}

/// The caller of an access token: ours, or the external issuer's when configured.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let ours = jsonwebtoken::decode_header(token)
        .map_err(|_| ApiError::Unauthorized("malformed access token"))?
        .kid
        .is_some_and(|kid| kid == state.keys.kid());
    if ours || state.external.is_none() {
        return state.verifier.verify(token, state.now_s()).map_err(|e| match e {
            crate::auth::tokens::TokenError::Invalid(reason) => ApiError::Unauthorized(reason),
            crate::auth::tokens::TokenError::Key(_) => ApiError::Internal,
        });
    }
    let external = state.external.as_ref().ok_or(ApiError::Unauthorized("unknown token issuer"))?;
    let claims = external.verify(token).await.map_err(|e| match e {
        crate::auth::tokens::TokenError::Invalid(reason) => ApiError::Unauthorized(reason),
        crate::auth::tokens::TokenError::Key(_) => ApiError::Internal,
    })?;
    let username = claims
        .get(&external.config.username_claim)
        .and_then(|v| v.as_str())
        .ok_or(ApiError::Unauthorized("the token names no customer"))?;
    let username = bp_core::customer::Username::parse(username)
        .map_err(|_| ApiError::Unauthorized("the token names no customer of this bank"))?;
    let customer = state
        .ledger
        .customer_by_username(&username)
        .await?
        .ok_or(ApiError::Unauthorized("the token names no customer of this bank"))?;
    let scopes = claims
        .get("scope")
        .and_then(|v| v.as_str())
        .map(|s| s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let amr = claims
        .get("amr")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok(Caller {
        customer_id: customer.id,
        scopes,
        amr,
        session: None,
        client_id: claims.get("azp").and_then(|v| v.as_str()).unwrap_or("external").to_owned(),
        exp: claims.get("exp").and_then(serde_json::Value::as_u64).unwrap_or(0),
        auth_time: None,
    })
}

impl OperationInput for Auth {
    fn operation_input(_ctx: &mut GenContext, operation: &mut Operation) {
        let mut requirement = SecurityRequirement::new();
        requirement.insert("bearer".to_owned(), Vec::new());
        operation.security.push(requirement);
    }
}
