//! The authorization endpoint (RFC 6749 §4.1 with PKCE, RFC 7636, S256 only) and the sign-in it
//! starts: a page of plain HTML forms, password first, then a TOTP code or a device key's
//! signature (asked whether the password was right or not: a failed sign-in gets one verdict at
//! the end, which names no element); on success an authorization code goes back to the client's registered redirect URI
//! with the issuer (RFC 9207). Sign-ins in progress are shared states of the security store
//! (`StateKind::SignIn`, keyed by the SHA-256 of the page's id), each stage a swap from the
//! version read; the authorization codes are transient records there: any server process serves
//! any step, and a sign-in completes once.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bp_core::Timestamp;
use bp_core::customer::Username;
use bp_core::ids::{CustomerId, DeviceId, SessionId};
use bp_core::sca::{CustomerGuard, ScaError, SecondFactor, Verified};
use bp_core::security::{AuditKind, ScaMethod};
use bp_core::transient::{StateKind, Transient, TransientKind};
use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::auth::crypto::{ct_eq, random_token, sha256, unb64};
use crate::auth::oauth::SCOPES;
use crate::auth::pages::{error_page, password_page, second_factor_page};
use crate::auth::passkey::{SigningIn, slot};
use crate::auth::tokens::Acr;
use crate::auth::{Provider, secs};
use crate::http::client::{ClientAddr, Source};
use crate::http::problem::ApiError;

/// What every failed sign-in answers, once both stages are done — a wrong password, an unknown
/// username, a username throttled from this source, a customer locked out, a wrong code or
/// signature — so that none tells which element was wrong (RTS art. 4(3)(a)).
const SIGN_IN_FAILED: &str = "The sign-in failed: the username, password, code or signature was not right. \
     Please start again. After several failed attempts, sign-in is paused for a while.";
/// Sign-ins in progress at most per client source, so that one source cannot fill the store
/// with them (an unauthenticated `GET /oauth2/authorize` makes one).
const LOGINS_PER_SOURCE_MAX: usize = 20;
/// The cookie binding a login form to the browser that opened it.
const LOGIN_COOKIE: &str = "bp_login";
/// The `prompt` values `/oauth2/authorize` takes (OpenID Connect Core §3.1.2.1). This provider
/// keeps no sign-in session of its own, so every authorization is a new sign-in with both
/// factors: `login` is always met and `none` can never be (`login_required`).
pub const PROMPTS: [&str; 2] = ["none", "login"];
/// What a sign-in at a weaker class than the request's `acr_values` asks answers.
const ACR_UNMET: &str = "This application asks for a sign-in with a passkey. Use a passkey to sign in.";

/// Where a sign-in is.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Stage {
    /// Waiting for username and password.
    Password,
    /// Password checked; waiting for the second factor. `None` when the password stage failed
    /// (wrong password, unknown username, throttled or locked out): the second-factor page is
    /// shown all the same, and the verdict comes after it, so that it names no element.
    SecondFactor {
        /// The customer, when the password was right.
        customer_id: Option<CustomerId>,
        /// The username typed, to fill the field again after a failed sign-in.
        username: String,
    },
    /// Completed: its code was issued (or its failure told to the client); its page is spent.
    Done,
}

/// A sign-in in progress: the validated authorization request and how far it got.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct LoginTx {
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    cookie_hash: [u8; 32],
    device_nonce: String,
    expires_at: Timestamp,
    stage: Stage,
    /// Where it was started from, for the bound per source.
    source: Source,
    /// The least class of sign-in the client accepts (its `acr_values`).
    acr: Acr,
    /// The passkey ceremony begun on this page, if any.
    #[serde(default)]
    pub(super) passkey: Option<SigningIn>,
}

impl LoginTx {
    /// The client signing in.
    pub(super) fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// An issued authorization code, kept in the security store as a transient record (so that
/// the token request may reach another server process than the sign-in) until it is redeemed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct AuthCode {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) customer_id: CustomerId,
    pub(super) scope: String,
    pub(super) nonce: Option<String>,
    pub(super) amr: Vec<String>,
    pub(super) auth_time: Timestamp,
    pub(super) expires_at: Timestamp,
    pub(super) session: SessionId,
}

/// The sign-in of page `tx_id` as stored, with its version; none once it ended.
async fn load(state: &Provider, tx_id: &str) -> Result<Option<(u64, LoginTx)>, ApiError> {
    let Some(stored) = state.security.shared_state(StateKind::SignIn, sha256(tx_id.as_bytes())).await? else {
        return Ok(None);
    };
    let tx: LoginTx = serde_json::from_slice(&stored.value).map_err(|_| ApiError::Internal)?;
    Ok((tx.expires_at > state.now()).then_some((stored.version, tx)))
}

/// Stores `tx` as the sign-in of page `tx_id` if it is still at `version` (0: new); false when
/// another request changed it first.
pub(super) async fn save(state: &Provider, tx_id: &str, version: u64, tx: &LoginTx) -> Result<bool, ApiError> {
    let value = serde_json::to_vec(tx).map_err(|_| ApiError::Internal)?;
    let key = sha256(tx_id.as_bytes());
    Ok(state.security.swap_shared_state(StateKind::SignIn, key, version, value, tx.expires_at).await?)
}

/// The page shown when storing a sign-in failed.
fn busy_page() -> Response {
    error_page(StatusCode::SERVICE_UNAVAILABLE, "Busy", "Please try again in a minute.")
}

/// The query of `/oauth2/authorize`.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    max_age: Option<String>,
    acr_values: Option<String>,
}

/// The least class of sign-in `acr_values` (space-separated, in order of preference) accepts:
/// the weakest of the classes we know; an error when it names none (OpenID Connect Core
/// §3.1.2.1 leaves unknown values to the provider; a bank refuses rather than guess).
fn least_acr(acr_values: Option<&str>) -> Result<Acr, &'static str> {
    let Some(values) = acr_values.filter(|v| !v.trim().is_empty()) else { return Ok(Acr::TwoFactor) };
    values
        .split(' ')
        .filter_map(Acr::parse)
        .min()
        .ok_or("acr_values names no class this provider signs in at (see acr_values_supported)")
}

/// Checks `prompt` and `max_age`. Every authorization here is a fresh sign-in with both factors,
/// so `login` and any `max_age` are met by it; `none` never is.
fn check_prompt(prompt: Option<&str>, max_age: Option<&str>) -> Result<(), (&'static str, &'static str)> {
    if max_age.is_some_and(|m| m.parse::<u64>().is_err()) {
        return Err(("invalid_request", "max_age must be a number of seconds"));
    }
    let values: Vec<&str> = prompt.unwrap_or("").split(' ').filter(|p| !p.is_empty()).collect();
    if values.iter().any(|p| !PROMPTS.contains(p)) {
        return Err(("invalid_request", "prompt may be none or login"));
    }
    if values.contains(&"none") {
        if values.len() > 1 {
            return Err(("invalid_request", "prompt=none cannot be combined with other values"));
        }
        return Err(("login_required", "the customer must sign in: this provider keeps no sign-in session"));
    }
    Ok(())
}

/// `GET /oauth2/authorize`: validates the request and shows the login form.
pub async fn authorize(
    State(state): State<Arc<Provider>>,
    client_addr: ClientAddr,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let source = client_addr.source();
    if let Err(e) = state.rate_limit(source).await {
        return e.into_response();
    }
    // Until client and redirect URI are known good, errors are shown, never redirected
    // (RFC 6749 §4.1.2.1), so that nobody can bounce users to a URI of their choosing.
    let Some(client) = q.client_id.as_deref().and_then(|id| state.client(id)) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown application",
            "The application asking you to sign in is not registered with this bank.",
        );
    };
    let Some(redirect_uri) =
        q.redirect_uri.clone().filter(|r| client.redirect_uris.iter().any(|u| redirect_matches(u, r)))
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unregistered return address",
            "The application gave a return address that is not registered for it.",
        );
    };
    let fail = |error: &str, description: &str| {
        redirect_error(&state.issuer, &redirect_uri, q.state.as_deref(), error, description)
    };
    if q.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    if q.code_challenge_method.as_deref() != Some("S256") {
        return fail("invalid_request", "PKCE with code_challenge_method=S256 is required");
    }
    let Some(code_challenge) =
        q.code_challenge.clone().filter(|c| c.len() == 43 && unb64(c).is_some_and(|b| b.len() == 32))
    else {
        return fail("invalid_request", "code_challenge must be the base64url SHA-256 of the code verifier");
    };
    let requested: Vec<&str> = q.scope.as_deref().unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
    if requested.is_empty() || requested.iter().any(|s| !SCOPES.contains(s)) {
        return fail("invalid_scope", "request some of: openid profile accounts payments offline_access");
    }
    if q.state.as_ref().is_some_and(|s| s.len() > 512) || q.nonce.as_ref().is_some_and(|n| n.len() > 512) {
        return fail("invalid_request", "state and nonce are limited to 512 characters");
    }
    if let Err((error, description)) = check_prompt(q.prompt.as_deref(), q.max_age.as_deref()) {
        return fail(error, description);
    }
    let acr = match least_acr(q.acr_values.as_deref()) {
        Ok(acr) => acr,
        Err(description) => return fail("invalid_request", description),
    };
    let now = state.now();
    let tx_id = random_token(24);
    let cookie = random_token(24);
    let tx = LoginTx {
        client_id: client.id.clone(),
        redirect_uri,
        scope: requested.join(" "),
        state: q.state.clone(),
        nonce: q.nonce.clone(),
        code_challenge,
        cookie_hash: sha256(cookie.as_bytes()),
        device_nonce: random_token(16),
        expires_at: now + Duration::seconds(secs(state.config.login_ttl_s)),
        stage: Stage::Password,
        source,
        acr,
        passkey: None,
    };
    let key = sha256(tx_id.as_bytes());
    match state
        .take_slot(StateKind::SourceSignIns, &source.key_bytes(), slot(&key), tx.expires_at, LOGINS_PER_SOURCE_MAX)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins",
                "Too many sign-ins were started from your address. Finish one, or try again in a few minutes.",
            );
        }
        Err(e) => return e.into_response(),
    }
    match save(&state, &tx_id, 0, &tx).await {
        Ok(true) => {}
        Ok(false) => return busy_page(),
        Err(e) => {
            tracing::error!(error = %e, "storing a sign-in failed");
            return busy_page();
        }
    }
    let note = (acr > Acr::TwoFactor).then_some(ACR_UNMET);
    let mut response = Html(password_page(&client.name, &tx_id, None, note)).into_response();
    set_login_cookie(&mut response, &cookie, state.https);
    response
}

/// The password form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    tx: String,
    username: String,
    password: String,
}

/// The second-factor form: a TOTP code, or a device's signature of the login message.
#[derive(Debug, Deserialize)]
pub struct SecondFactorForm {
    tx: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

/// The text a device signs to sign in with its key instead of a TOTP code.
pub fn login_message(tx: &str, nonce: &str) -> String {
    format!("bp-login-v1\ntx:{tx}\nnonce:{nonce}")
}

/// The sign-in of page `tx_id` and its version, when it is in progress and was started in this
/// browser (its cookie); else the page to show.
pub(super) async fn take_tx(
    state: &Provider,
    headers: &HeaderMap,
    tx_id: &str,
) -> Result<(u64, LoginTx), Box<Response>> {
    let found = match load(state, tx_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "reading a sign-in failed");
            return Err(Box::new(busy_page()));
        }
    };
    let Some((version, tx)) = found.filter(|(_, t)| !matches!(t.stage, Stage::Done)) else {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in page has expired. Go back to the application and start again.",
        )));
    };
    let cookie = cookie_value(headers, LOGIN_COOKIE).unwrap_or_default();
    if !ct_eq(&sha256(cookie.as_bytes()), &tx.cookie_hash) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in not recognised",
            "This sign-in was started in another browser or its cookie was blocked. Start again from the application.",
        )));
    }
    Ok((version, tx))
}

/// `POST /oauth2/login/password`. Right or wrong — a wrong password, an unknown username, a
/// username throttled from this source, a customer locked out — the same second-factor page
/// follows after the same work (one password hash check); the verdict comes after the second
/// factor and names no element (RTS art. 4(3)(a)).
pub async fn login_password(
    State(state): State<Arc<Provider>>,
    client_addr: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    let (version, mut tx) = match take_tx(&state, &headers, &form.tx).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let client_name = state.client(&tx.client_id).map(|c| c.name.clone()).unwrap_or_default();
    let source = client_addr.source();
    if let Err(e) = state.rate_limit(source).await {
        return e.into_response();
    }
    if tx.acr > Acr::TwoFactor {
        return Html(password_page(&client_name, &form.tx, Some(&form.username), Some(ACR_UNMET))).into_response();
    }
    let Claimant { customer_id, refused, locked, _guard } = claimant(&state, &form.username, source).await;
    // One password hash check whatever the case: the customer's hash, or a dummy one.
    let right = match check_password(&state, customer_id, form.password).await {
        Ok(right) => right && !refused && !locked,
        Err(e) => return e.into_response(),
    };
    if right {
        if let Err(e) = state.password_passed(&form.username, source).await {
            return e.into_response();
        }
    } else {
        metrics::counter!("bp_logins_total", "outcome" => "failed").increment(1);
        let detail = serde_json::json!({ "client_id": tx.client_id });
        if refused || locked {
            state.audit(AuditKind::LockedOutAttempt, customer_id, detail).await.ok();
        } else {
            state.audit(AuditKind::PasswordFailed, customer_id, detail).await.ok();
            match state.password_failed(&form.username, source).await {
                Ok(Some(lock_s)) => {
                    let detail = serde_json::json!({ "scope": "username_and_source", "lock_s": lock_s });
                    state.audit(AuditKind::LockedOut, customer_id, detail).await.ok();
                }
                Ok(None) => {}
                Err(e) => return e.into_response(),
            }
        }
    }
    // The second-factor page either way: whether the password was right is told only with the
    // verdict on both factors.
    let passed = customer_id.filter(|_| right);
    tx.stage = Stage::SecondFactor { customer_id: passed, username: form.username.trim().to_owned() };
    match save(&state, &form.tx, version, &tx).await {
        Ok(true) => {}
        // The form was sent twice (a double click, another replica): the first to land decided
        // the stage; this answer shows the same page, whose form that stage takes.
        Ok(false) => match take_tx(&state, &headers, &form.tx).await {
            Ok((_, now_stored)) if matches!(now_stored.stage, Stage::SecondFactor { .. }) => {}
            Ok(_) => {
                return error_page(StatusCode::BAD_REQUEST, "Sign-in expired", "Start again from the application.");
            }
            Err(page) => return *page,
        },
        Err(e) => return e.into_response(),
    }
    Html(second_factor_page(&client_name, &form.tx, &tx.device_nonce, None)).into_response()
}

/// The verdict on a failed sign-in, whichever element failed: sign-in `tx_id` (at `version`)
/// goes back to its password stage, with the one message of every failure. (A swap lost to a
/// concurrent request of the same page leaves that request's stage.)
async fn sign_in_failed(state: &Provider, tx_id: &str, version: u64, mut tx: LoginTx, client_name: &str) -> Response {
    let username = match std::mem::replace(&mut tx.stage, Stage::Password) {
        Stage::SecondFactor { username, .. } => Some(username),
        Stage::Password | Stage::Done => None,
    };
    if let Err(e) = save(state, tx_id, version, &tx).await {
        return e.into_response();
    }
    Html(password_page(client_name, tx_id, username.as_deref(), Some(SIGN_IN_FAILED))).into_response()
}

/// Who a sign-in attempt for a username names, and whether it may be tried: the customer (none
/// for an unknown username), whether the (username, source) pair is throttled or the username's
/// budget spent (`refused`), and whether the customer is locked out — held under the customer's
/// lock for the rest of the attempt. Both sign-in paths (password, passkey) ask it the same way.
pub(super) struct Claimant<'a> {
    pub(super) customer_id: Option<CustomerId>,
    pub(super) refused: bool,
    pub(super) locked: bool,
    pub(super) _guard: Option<CustomerGuard<'a>>,
}

pub(super) async fn claimant<'a>(state: &'a Provider, username: &str, source: Source) -> Claimant<'a> {
    // A store failing to count refuses the attempt (counted as refused, never as allowed).
    let within = state.username_within_budget(username).await.unwrap_or(false);
    let refused = !within || state.throttled(username, source).await.unwrap_or(true);
    let customer = match Username::parse(username.trim()) {
        Ok(u) => state.ledger.customer_by_username(&u).await.ok().flatten(),
        Err(_) => None,
    };
    let customer_id = customer.as_ref().map(|c| c.id);
    let _guard = match customer_id {
        Some(id) => Some(state.sca.lock(id).await),
        None => None,
    };
    let locked = match customer_id {
        Some(id) => matches!(state.sca.unlocked(id).await, Err(ScaError::LockedOut { .. })),
        None => false,
    };
    Claimant { customer_id, refused, locked, _guard }
}

/// Whether `password` is `customer`'s; for an unknown customer (or one without credentials) a
/// dummy hash is checked, so that the answer takes as long.
async fn check_password(state: &Provider, customer: Option<CustomerId>, password: String) -> Result<bool, ApiError> {
    let credentials = match customer {
        Some(id) => state.security.credentials(id).await?,
        None => None,
    };
    let hasher = state.hasher.clone();
    let known = credentials.is_some();
    let phc = credentials.map(|c| c.password_hash).unwrap_or_else(|| state.dummy_hash.clone());
    let right =
        tokio::task::spawn_blocking(move || hasher.verify(&phc, &password)).await.map_err(|_| ApiError::Internal)?;
    Ok(right && known)
}

/// `POST /oauth2/login/second-factor`.
pub async fn login_second_factor(
    State(state): State<Arc<Provider>>,
    client_addr: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<SecondFactorForm>,
) -> Response {
    let (version, tx) = match take_tx(&state, &headers, &form.tx).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let client_name = state.client(&tx.client_id).map(|c| c.name.clone()).unwrap_or_default();
    let Stage::SecondFactor { customer_id, .. } = tx.stage.clone() else {
        return Html(password_page(&client_name, &form.tx, None, Some("Enter your username and password first.")))
            .into_response();
    };
    if let Err(e) = state.rate_limit(client_addr.source()).await {
        return e.into_response();
    }
    // The password stage failed (and was counted there): the verdict, whatever was entered here.
    let Some(customer_id) = customer_id else {
        return sign_in_failed(&state, &form.tx, version, tx, &client_name).await;
    };
    let _guard = state.sca.lock(customer_id).await;
    let verified = match check_second_factor(&state, customer_id, &form, &tx).await {
        Ok(Some(verified)) => verified,
        Ok(None) => {
            metrics::counter!("bp_logins_total", "outcome" => "failed").increment(1);
            if let Err(e) = state.sca.record_failure(customer_id, AuditKind::SecondFactorFailed).await {
                return ApiError::from(e).into_response();
            }
            return sign_in_failed(&state, &form.tx, version, tx, &client_name).await;
        }
        Err(ApiError::LockedOut { .. }) => {
            state.audit(AuditKind::LockedOutAttempt, Some(customer_id), serde_json::json!({})).await.ok();
            return sign_in_failed(&state, &form.tx, version, tx, &client_name).await;
        }
        Err(e) => return e.into_response(),
    };
    // Both factors passed: the sign-in is an SCA, which resets failures, lockouts and the
    // low-value exemption counters.
    let now = state.now();
    let amr = amr_of(verified.method);
    let detail = serde_json::json!({ "client_id": tx.client_id, "amr": ["pwd", amr] });
    if let Err(e) = state.sca.signed_in(customer_id, verified, detail).await {
        return ApiError::from(e).into_response();
    }
    complete(&state, &form.tx, version, tx, customer_id, vec!["pwd".to_owned(), amr.to_owned()], now).await
}

/// Ends sign-in `tx_id` (at `version`) of `customer_id`, who signed in at `auth_time` with the
/// methods `amr` (both factors checked, and the success recorded, by the caller): redirects to
/// the client with a new authorization code, or, when `amr` falls short of the client's
/// `acr_values`, with `unmet_authentication_requirements` (OpenID Connect Core errata
/// §3.1.2.6). The sign-in is marked done first: of two requests completing it, one gets a code.
#[allow(clippy::too_many_arguments)]
pub(super) async fn complete(
    state: &Provider,
    tx_id: &str,
    version: u64,
    mut tx: LoginTx,
    customer_id: CustomerId,
    amr: Vec<String>,
    auth_time: Timestamp,
) -> Response {
    tx.stage = Stage::Done;
    tx.passkey = None;
    match save(state, tx_id, version, &tx).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(StatusCode::BAD_REQUEST, "Sign-in expired", "Start again from the application.");
        }
        Err(e) => return e.into_response(),
    }
    // Its source may start another (a failure to say so leaves the slot to end with the page).
    let key = sha256(tx_id.as_bytes());
    if let Err(e) = state.free_slot(StateKind::SourceSignIns, &tx.source.key_bytes(), slot(&key)).await {
        tracing::warn!(error = %e, "freeing a sign-in's slot failed");
    }
    let mut response = if Acr::of_amr(&amr).is_none_or(|acr| acr < tx.acr) {
        let description = "the sign-in does not reach the class acr_values asks for";
        redirect_error(
            &state.issuer,
            &tx.redirect_uri,
            tx.state.as_deref(),
            "unmet_authentication_requirements",
            description,
        )
    } else {
        metrics::counter!("bp_logins_total", "outcome" => "succeeded").increment(1);
        let code = random_token(32);
        let auth = AuthCode {
            client_id: tx.client_id.clone(),
            redirect_uri: tx.redirect_uri.clone(),
            code_challenge: tx.code_challenge.clone(),
            customer_id,
            scope: tx.scope.clone(),
            nonce: tx.nonce.clone(),
            amr,
            auth_time,
            expires_at: auth_time + Duration::seconds(secs(state.config.code_ttl_s)),
            session: SessionId::new_v7(),
        };
        let record = serde_json::to_vec(&auth).map(|value| Transient {
            kind: TransientKind::AuthorizationCode,
            key: sha256(code.as_bytes()),
            value,
            expires_at: auth.expires_at,
            spent: false,
        });
        let stored = match record {
            Ok(record) => state.security.put_transient(record).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "storing an authorization code failed");
            return busy_page();
        }
        let mut params = vec![("code", code.as_str()), ("iss", state.issuer.as_str())];
        if let Some(s) = tx.state.as_deref() {
            params.push(("state", s));
        }
        Redirect::to(&with_query(&tx.redirect_uri, &params)).into_response()
    };
    clear_login_cookie(&mut response, state.https);
    response
}

/// `Ok(Some(verified))` when the second factor is right; a locked-out customer is refused.
async fn check_second_factor(
    state: &Provider,
    customer_id: CustomerId,
    form: &SecondFactorForm,
    tx: &LoginTx,
) -> Result<Option<Verified>, ApiError> {
    let security = state.sca.unlocked(customer_id).await?;
    let message = login_message(&form.tx, &tx.device_nonce);
    let factor = match (form.code.as_deref().filter(|c| !c.is_empty()), &form.device_id, &form.signature) {
        (Some(code), _, _) => SecondFactor::Totp { code },
        (None, Some(device_id), Some(signature)) => {
            let Ok(device_id) = device_id.parse::<DeviceId>() else { return Ok(None) };
            SecondFactor::Device { device_id, message: &message, signature }
        }
        _ => return Ok(None),
    };
    Ok(state.sca.second_factor(customer_id, factor, &security).await?)
}

/// The RFC 8176 `amr` value of a second factor: `otp` for a TOTP code, `hwk` for a device key.
fn amr_of(method: ScaMethod) -> &'static str {
    match method {
        ScaMethod::Totp => "otp",
        ScaMethod::DeviceSignature => "hwk",
    }
}

fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{encoded}")
}

/// Whether `requested` is the registered redirect URI `registered`: the same string, or, for a
/// loopback IP literal over `http` (`http://127.0.0.1…`, `http://[::1]…`), the same URI on any
/// port (RFC 8252 §7.3): a local app or the reference web app served on another port is still
/// the same client, and nothing outside the machine can receive a loopback redirect.
fn redirect_matches(registered: &str, requested: &str) -> bool {
    fn without_port(uri: &str) -> Option<(&str, &str)> {
        let host = ["http://127.0.0.1", "http://[::1]"].into_iter().find(|h| uri.starts_with(h))?;
        let rest = &uri[host.len()..];
        let rest = match rest.strip_prefix(':') {
            Some(r) => {
                let digits = r.bytes().take_while(u8::is_ascii_digit).count();
                let port = &r[..digits];
                if port.is_empty() || port.len() > 5 || port.parse::<u16>().is_err() {
                    return None;
                }
                &r[digits..]
            }
            None => rest,
        };
        (rest.is_empty() || rest.starts_with('/')).then_some((host, rest))
    }
    registered == requested
        || matches!((without_port(registered), without_port(requested)), (Some(a), Some(b)) if a == b)
}

fn redirect_error(issuer: &str, redirect_uri: &str, state: Option<&str>, error: &str, description: &str) -> Response {
    let mut params = vec![("error", error), ("error_description", description), ("iss", issuer)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    Redirect::to(&with_query(redirect_uri, &params)).into_response()
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn set_login_cookie(response: &mut Response, value: &str, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{LOGIN_COOKIE}={value}; Path=/oauth2; HttpOnly; SameSite=Strict; Max-Age=600{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn clear_login_cookie(response: &mut Response, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{LOGIN_COOKIE}=; Path=/oauth2; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_existing_query_parameters() {
        assert_eq!(with_query("https://a/cb?x=1", &[("code", "c d")]), "https://a/cb?x=1&code=c+d");
    }

    #[test]
    fn loopback_redirects_match_on_any_port_and_nothing_else_does() {
        let web = "http://127.0.0.1:8080/callback";
        assert!(redirect_matches(web, web));
        assert!(redirect_matches(web, "http://127.0.0.1:9000/callback"));
        assert!(redirect_matches(web, "http://127.0.0.1/callback"));
        assert!(redirect_matches("http://[::1]/cb", "http://[::1]:43123/cb"));
        for other in [
            "http://127.0.0.1:9000/callback/x",
            "http://127.0.0.1:9000/other",
            "http://127.0.0.1.evil.example/callback",
            "http://127.0.0.1:80@evil.example/callback",
            "http://127.0.0.1:99999/callback",
            "http://127.0.0.1:/callback",
            "https://127.0.0.1:9000/callback",
            "http://localhost:8080/callback",
            "http://[::1]:8080/callback",
        ] {
            assert!(!redirect_matches(web, other), "{other}");
        }
        // Only loopback literals get the port rule.
        assert!(!redirect_matches("https://bank.example/cb", "https://bank.example:444/cb"));
        assert!(redirect_matches("bp.mobile://oauth/callback", "bp.mobile://oauth/callback"));
    }
}
