//! The OAuth2 authorization server and OpenID provider, the checks of the access tokens the API
//! receives, and the per-IP rate limit of sign-in. The rules sign-in shares with strong customer
//! authentication (second factors, lockout, per-customer locks, the audit log) are bp-core's
//! [`Sca`], which the provider holds.
//!
//! The subsystem has a state of its own, [`Provider`]: its handlers take
//! `State<Arc<Provider>>` and its extractors ([`Auth`], [`Payer`]) any router state that holds
//! one ([`bearer::HasProvider`]), so that it knows nothing of the server's `AppState`, which
//! composes it.
//! It sits above `crate::http` (problems) and `crate::config`, and below everything that
//! authenticates.
//!
//! - [`oauth`]: discovery, JWKS, the token endpoint (both grants), revocation and userinfo.
//! - [`login`]: the authorization endpoint and the sign-in it starts (password, second factor).
//! - [`passkey`]: passkeys (WebAuthn): the Relying Party, registration's ceremony for the v1
//!   routes, and the sign-in with username and passkey.
//! - [`pages`]: the sign-in's HTML pages and stylesheet.
//! - [`tokens`]: the signing key, the claims, and checking our own and an external issuer's tokens.
//! - [`activity`]: the inactivity limit: sessions end after `auth.idle_timeout_s` without use.
//! - [`bearer`]: the access-token extractors of the API (bearer, or DPoP-bound with a proof).
//! - [`dpop`]: DPoP proofs (RFC 9449): checking one, key thumbprints, replay cache, nonces.
//! - [`guard`]: budgets of attempts per source and per username, the throttle of failed
//!   passwords per (username, source), and the audit log as the provider writes it.
//! - [`crypto`]: random tokens, hashes, Argon2id, the TOTP URI.

pub mod activity;
pub mod bearer;
pub mod crypto;
pub mod dpop;
pub mod guard;
pub mod login;
pub mod oauth;
pub mod pages;
pub mod passkey;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use bp_core::clock::Clock;
use bp_core::sca::{LockoutRules, Sca};
use bp_core::security::SecurityStore;
use bp_core::transient::{Transient, TransientKind};
use bp_core::{Ledger, Store, StoreErrorKind, Timestamp};

pub use crate::auth::bearer::{Auth, Passive, Payer, authenticate, authenticate_request};
use crate::auth::crypto::PasswordHasherConfig;
use crate::auth::dpop::{Dpop, Proof, ProofError, Target};
use crate::auth::tokens::{External, Keys, Verifier};
use crate::config::{AuthConfig, ClientConfig, Config};

/// The provider's state: what its endpoints, the token checks and the security bookkeeping share.
pub struct Provider {
    /// The issuer URL.
    pub issuer: String,
    /// The authorization server's settings.
    pub config: AuthConfig,
    /// Whether clients reach the server over HTTPS (the sign-in cookie is `Secure` then).
    pub https: bool,
    /// The customers: by username at sign-in and for an external issuer's tokens, by id for
    /// userinfo.
    pub ledger: Ledger<dyn Store>,
    /// Credentials, devices, refresh tokens, sessions, security state and the audit log.
    pub security: Arc<dyn SecurityStore>,
    /// Signing keys.
    pub keys: Keys,
    /// Access-token checks.
    pub verifier: Verifier,
    /// The external issuer, when configured.
    pub external: Option<External>,
    /// DPoP proofs: their replay cache, and the server's nonces when required.
    pub dpop: Dpop,
    /// The sessions' last activity, for the inactivity limit.
    pub activity: activity::Activity,
    /// Password hashing.
    pub hasher: PasswordHasherConfig,
    /// A hash verified for unknown usernames, so that their answer takes as long.
    pub dummy_hash: String,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Second factors, lockout, the per-customer locks and the audit log (bp-core's rules).
    pub sca: Sca,
    /// Rung after each audit write (by the hooks of `sca`), for whoever reads the log as it
    /// grows (the event streams' audit tail).
    pub audit_written: Arc<tokio::sync::Notify>,
    /// Passkeys: the Relying Party and its ceremonies in progress.
    pub passkeys: passkey::Passkeys,
    /// Lockout after failed passwords, per (username, source).
    pub lockout: LockoutRules,
    /// Whether other server processes share the store (MongoDB): DPoP proofs are then
    /// recorded there too.
    shared_store: bool,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl Provider {
    /// The provider of `config`, over the customers of `ledger` and the records of `sca`'s
    /// store, signing with `keys`; `audit_written` is rung after each audit write.
    pub fn new(
        config: &Config,
        ledger: Ledger<dyn Store>,
        keys: Keys,
        clock: Arc<dyn Clock>,
        sca: Sca,
        audit_written: Arc<tokio::sync::Notify>,
    ) -> Result<Self, String> {
        let issuer = config.issuer();
        let hasher = PasswordHasherConfig::new(config.auth.argon2_memory_kib, config.auth.argon2_iterations)?;
        let dummy_hash = hasher.hash(&crypto::random_token(16))?;
        let verifier = Verifier::new(&keys, issuer.clone(), config.auth.audience.clone());
        let external = config.auth.external.clone().map(External::new);
        let dpop = Dpop::new(config.auth.dpop_nonce.then(|| keys.nonce_secret()));
        Ok(Self {
            issuer,
            config: config.auth.clone(),
            https: config.public_https(),
            ledger,
            security: Arc::clone(sca.store()),
            keys,
            verifier,
            external,
            dpop,
            activity: activity::Activity::default(),
            hasher,
            dummy_hash,
            clock,
            sca,
            audit_written,
            passkeys: passkey::Passkeys::new(&config.issuer(), config.sca.challenge_ttl()),
            lockout: config.lockout.clone(),
            shared_store: config.storage.kind == crate::config::StorageKind::Mongodb,
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
        let ttl_s = i64::try_from(self.config.session_ttl_s).unwrap_or(i64::MAX / 1_000_000);
        auth_time
            .checked_add_signed(chrono::Duration::seconds(ttl_s))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    /// The DPoP proof of a request to `path` (of this server's public URL, the issuer: not the
    /// `Host` it was sent to, which a proxy may change) with `method`, checked, when it has one;
    /// `access_token`, the token it must be made for (its `ath`). Two `DPoP` headers are refused.
    ///
    /// A proof is accepted once by this process (its replay cache). On a store that several
    /// processes share (MongoDB), the proof of a request that changes something (any method but
    /// `GET`, `HEAD` and `OPTIONS`) is also recorded in the store as a transient record, whose
    /// insert fails for a proof another replica accepted: a captured proof cannot be replayed
    /// to another replica with a body of the attacker's (a proof does not cover the body). Reads
    /// are left out: a replayed read answers what the first one did, and a store write per
    /// read would double the store's load.
    pub async fn dpop_proof(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        access_token: Option<&str>,
    ) -> Result<Option<Proof>, ProofError> {
        let mut values = headers.get_all("dpop").iter();
        let Some(value) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(ProofError::Invalid("a request carries one DPoP proof at most"));
        }
        let proof = value.to_str().map_err(|_| ProofError::Invalid("the DPoP proof is not a JWT"))?;
        let url = format!("{}{path}", self.issuer);
        let proof = self.dpop.check(proof, Target { method, url: &url, access_token }, self.now().timestamp())?;
        if self.shared_store && !matches!(method, "GET" | "HEAD" | "OPTIONS") {
            let seen = Transient {
                kind: TransientKind::DpopProof,
                key: proof.seen_key,
                value: Vec::new(),
                expires_at: chrono::DateTime::from_timestamp(proof.accepted_until_s.saturating_add(1), 0)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
                spent: false,
            };
            match self.security.put_transient(seen).await {
                Ok(()) => {}
                Err(e) if e.kind() == StoreErrorKind::Conflict => {
                    return Err(ProofError::Invalid("the proof was used before (jti)"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording a DPoP proof failed");
                    return Err(ProofError::Busy);
                }
            }
        }
        Ok(Some(proof))
    }

    /// The registered client `id`.
    fn client(&self, id: &str) -> Option<&ClientConfig> {
        self.config.clients.iter().find(|c| c.id == id)
    }
}

/// The provider's routes: discovery, JWKS, the authorization endpoint and its sign-in pages, the
/// token, revocation and userinfo endpoints.
pub fn routes() -> Router<Arc<Provider>> {
    Router::new()
        .route("/.well-known/openid-configuration", get(oauth::discovery))
        .route("/oauth2/jwks", get(oauth::jwks))
        .route("/oauth2/authorize", get(login::authorize))
        .route("/oauth2/login/password", post(login::login_password))
        .route("/oauth2/login/second-factor", post(login::login_second_factor))
        .route("/oauth2/login/passkey/options", post(passkey::sign_in_options))
        .route("/oauth2/login/passkey", post(passkey::sign_in))
        .route("/oauth2/login.css", get(pages::login_css))
        .route(oauth::TOKEN_PATH, post(oauth::token))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/userinfo", get(oauth::userinfo))
}

/// Seconds as a signed count for `chrono::Duration`, saturating far beyond any configured value.
fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1_000_000)
}
