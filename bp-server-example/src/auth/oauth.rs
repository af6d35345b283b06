//! The built-in OAuth2 authorization server and OpenID provider: discovery, JWKS, the
//! authorization-code flow with PKCE (S256 only, RFC 7636) and the issuer parameter (RFC 9207),
//! a login page of plain HTML forms (password, then TOTP or a device-key signature), the token
//! endpoint with rotating refresh tokens and reuse detection (RFC 9700 §4.14), revocation
//! (RFC 7009) and userinfo.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bp_core::Timestamp;
use bp_core::api::TokenResponse;
use bp_core::customer::{Customer, Username};
use bp_core::ids::{CustomerId, DeviceId, SessionId};
use bp_core::security::{AuditKind, RefreshToken, RefreshTokenState, Rotation};
use chrono::Duration;
use serde::Deserialize;

use crate::auth::crypto::{b64, ct_eq, random_token, sha256, unb64};
use crate::auth::tokens::{AccessClaims, IdClaims};
use crate::config::ClientConfig;
use crate::http::problem::ApiError;
use crate::state::AppState;

/// Scopes this server grants.
pub const SCOPES: [&str; 5] = ["openid", "profile", "accounts", "payments", "offline_access"];
/// Sign-ins in progress at most (beyond, new ones are refused until some finish or expire).
const LOGINS_MAX: usize = 10_000;
/// Unredeemed authorization codes at most.
const CODES_MAX: usize = 10_000;
/// The cookie binding a login form to the browser that opened it.
const LOGIN_COOKIE: &str = "bp_login";

/// Where a sign-in is.
#[derive(Clone, Debug)]
enum Stage {
    /// Waiting for username and password.
    Password,
    /// Password right; waiting for the second factor.
    SecondFactor { customer_id: CustomerId },
}

/// A sign-in in progress: the validated authorization request and how far it got.
#[derive(Clone, Debug)]
struct LoginTx {
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
}

/// An issued authorization code.
#[derive(Clone, Debug)]
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    customer_id: CustomerId,
    scope: String,
    nonce: Option<String>,
    amr: Vec<String>,
    auth_time: Timestamp,
    expires_at: Timestamp,
    session: SessionId,
    redeemed: bool,
}

/// Sign-ins and codes in progress (in memory: both live for seconds to minutes).
#[derive(Debug, Default)]
pub struct Flows {
    logins: Mutex<HashMap<String, LoginTx>>,
    codes: Mutex<HashMap<[u8; 32], AuthCode>>,
}

impl Flows {
    fn sweep(&self, now: Timestamp) {
        self.logins.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, t| t.expires_at > now);
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, c| c.expires_at + Duration::minutes(10) > now);
    }
}

/// `/.well-known/openid-configuration`.
pub async fn discovery(State(state): State<Arc<AppState>>) -> Response {
    let i = &state.issuer;
    let doc = serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/oauth2/authorize"),
        "token_endpoint": format!("{i}/oauth2/token"),
        "revocation_endpoint": format!("{i}/oauth2/revoke"),
        "userinfo_endpoint": format!("{i}/oauth2/userinfo"),
        "jwks_uri": format!("{i}/oauth2/jwks"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "sid", "preferred_username", "name"],
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(doc)).into_response()
}

/// `/oauth2/jwks`.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(state.keys.jwks().clone())).into_response()
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
}

fn client<'a>(state: &'a AppState, id: &str) -> Option<&'a ClientConfig> {
    state.config.auth.clients.iter().find(|c| c.id == id)
}

/// `GET /oauth2/authorize`: validates the request and shows the login form.
pub async fn authorize(State(state): State<Arc<AppState>>, Query(q): Query<AuthorizeQuery>) -> Response {
    // Until client and redirect URI are known good, errors are shown, never redirected
    // (RFC 6749 §4.1.2.1), so that nobody can bounce users to a URI of their choosing.
    let Some(client) = q.client_id.as_deref().and_then(|id| client(&state, id)) else {
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
    let now = state.now();
    state.flows.sweep(now);
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
        expires_at: now + Duration::seconds(secs(state.config.auth.login_ttl_s)),
        stage: Stage::Password,
    };
    {
        let mut logins = state.flows.logins.lock().unwrap_or_else(PoisonError::into_inner);
        if logins.len() >= LOGINS_MAX {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "Too many sign-ins are in progress. Please try again in a minute.",
            );
        }
        logins.insert(tx_id.clone(), tx);
    }
    let mut response = Html(password_page(&client.name, &tx_id, None)).into_response();
    set_login_cookie(&mut response, &cookie, state.config.tls());
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

fn take_tx(state: &AppState, headers: &HeaderMap, tx_id: &str) -> Result<LoginTx, Box<Response>> {
    let now = state.now();
    let logins = state.flows.logins.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(tx) = logins.get(tx_id).filter(|t| t.expires_at > now) else {
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
    Ok(tx.clone())
}

/// `POST /oauth2/login/password`.
pub async fn login_password(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    let tx = match take_tx(&state, &headers, &form.tx) {
        Ok(tx) => tx,
        Err(page) => return *page,
    };
    let client_name = client(&state, &tx.client_id).map(|c| c.name.clone()).unwrap_or_default();
    if let Err(e) = state.rate_limit(peer.ip()) {
        return e.into_response();
    }
    let customer = match Username::parse(form.username.trim()) {
        Ok(u) => state.ledger.customer_by_username(&u).await.ok().flatten(),
        Err(_) => None,
    };
    let Some(customer) = customer else {
        // Take as long as a real check, so that timing does not reveal which usernames exist.
        let dummy = state.dummy_hash.clone();
        let hasher = state.hasher.clone();
        let password = form.password;
        let _ = tokio::task::spawn_blocking(move || hasher.verify(&dummy, &password)).await;
        state.audit(AuditKind::PasswordFailed, None, serde_json::json!({ "client_id": tx.client_id })).await.ok();
        metrics::counter!("bp_logins_total", "outcome" => "failed").increment(1);
        return Html(password_page(&client_name, &form.tx, Some("Wrong username or password."))).into_response();
    };
    let _guard = state.lock_customer(customer.id).await;
    let outcome = check_password(&state, &customer, form.password).await;
    match outcome {
        Ok(true) => {}
        Ok(false) => {
            metrics::counter!("bp_logins_total", "outcome" => "failed").increment(1);
            if let Err(e) = state.record_failure(customer.id, AuditKind::PasswordFailed).await {
                return e.into_response();
            }
            return Html(password_page(&client_name, &form.tx, Some("Wrong username or password."))).into_response();
        }
        Err(ApiError::LockedOut { .. }) => {
            state.audit(AuditKind::LockedOutAttempt, Some(customer.id), serde_json::json!({})).await.ok();
            return Html(password_page(&client_name, &form.tx, Some("Too many failed attempts. Try again later.")))
                .into_response();
        }
        Err(e) => return e.into_response(),
    }
    let has_totp =
        state.security.credentials(customer.id).await.ok().flatten().is_some_and(|c| c.totp_secret.is_some());
    let mut logins = state.flows.logins.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(stored) = logins.get_mut(&form.tx) else {
        return error_page(StatusCode::BAD_REQUEST, "Sign-in expired", "Start again from the application.");
    };
    stored.stage = Stage::SecondFactor { customer_id: customer.id };
    let nonce = stored.device_nonce.clone();
    drop(logins);
    Html(second_factor_page(&client_name, &form.tx, &nonce, has_totp, None)).into_response()
}

async fn check_password(state: &AppState, customer: &Customer, password: String) -> Result<bool, ApiError> {
    let security = state.security.security_state(customer.id).await?;
    state.check_lock(&security)?;
    let credentials = state.security.credentials(customer.id).await?;
    let hasher = state.hasher.clone();
    let phc = credentials.map(|c| c.password_hash).unwrap_or_else(|| state.dummy_hash.clone());
    tokio::task::spawn_blocking(move || hasher.verify(&phc, &password)).await.map_err(|_| ApiError::Internal)
}

/// `POST /oauth2/login/second-factor`.
pub async fn login_second_factor(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SecondFactorForm>,
) -> Response {
    let tx = match take_tx(&state, &headers, &form.tx) {
        Ok(tx) => tx,
        Err(page) => return *page,
    };
    let client_name = client(&state, &tx.client_id).map(|c| c.name.clone()).unwrap_or_default();
    let Stage::SecondFactor { customer_id, .. } = tx.stage.clone() else {
        return Html(password_page(&client_name, &form.tx, Some("Enter your username and password first.")))
            .into_response();
    };
    if let Err(e) = state.rate_limit(peer.ip()) {
        return e.into_response();
    }
    let _guard = state.lock_customer(customer_id).await;
    let result = check_second_factor(&state, customer_id, &form, &tx).await;
    let has_totp =
        state.security.credentials(customer_id).await.ok().flatten().is_some_and(|c| c.totp_secret.is_some());
    let method = match result {
        Ok(Some(method)) => method,
        Ok(None) => {
            metrics::counter!("bp_logins_total", "outcome" => "failed").increment(1);
            if let Err(e) = state.record_failure(customer_id, AuditKind::SecondFactorFailed).await {
                return e.into_response();
            }
            return Html(second_factor_page(
                &client_name,
                &form.tx,
                &tx.device_nonce,
                has_totp,
                Some("That code or signature is not valid."),
            ))
            .into_response();
        }
        Err(ApiError::LockedOut { .. }) => {
            state.audit(AuditKind::LockedOutAttempt, Some(customer_id), serde_json::json!({})).await.ok();
            return Html(second_factor_page(
                &client_name,
                &form.tx,
                &tx.device_nonce,
                has_totp,
                Some("Too many failed attempts. Try again later."),
            ))
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    // Both factors passed: the sign-in is an SCA, which resets failures and the low-value
    // exemption counters.
    let now = state.now();
    let reset = async {
        let mut security = state.security.security_state(customer_id).await?;
        security.failures = 0;
        security.lockouts = 0;
        security.locked_until = None;
        bp_core::sca::reset_low_value(&mut security);
        if let Some(step) = method.1 {
            security.totp_last_step = Some(step);
        }
        state.security.put_security_state(customer_id, security).await?;
        state
            .audit(
                AuditKind::LoginSucceeded,
                Some(customer_id),
                serde_json::json!({ "client_id": tx.client_id, "amr": ["pwd", method.0] }),
            )
            .await
    };
    if let Err(e) = reset.await {
        return e.into_response();
    }
    metrics::counter!("bp_logins_total", "outcome" => "succeeded").increment(1);
    state.flows.logins.lock().unwrap_or_else(PoisonError::into_inner).remove(&form.tx);
    let code = random_token(32);
    let auth = AuthCode {
        client_id: tx.client_id.clone(),
        redirect_uri: tx.redirect_uri.clone(),
        code_challenge: tx.code_challenge.clone(),
        customer_id,
        scope: tx.scope.clone(),
        nonce: tx.nonce.clone(),
        amr: vec!["pwd".to_owned(), method.0.to_owned()],
        auth_time: now,
        expires_at: now + Duration::seconds(secs(state.config.auth.code_ttl_s)),
        session: SessionId::new_v7(),
        redeemed: false,
    };
    {
        let mut codes = state.flows.codes.lock().unwrap_or_else(PoisonError::into_inner);
        if codes.len() >= CODES_MAX {
            return error_page(StatusCode::SERVICE_UNAVAILABLE, "Busy", "Please try again in a minute.");
        }
        codes.insert(sha256(code.as_bytes()), auth);
    }
    let mut params = vec![("code", code.as_str()), ("iss", state.issuer.as_str())];
    if let Some(s) = tx.state.as_deref() {
        params.push(("state", s));
    }
    let mut response = Redirect::to(&with_query(&tx.redirect_uri, &params)).into_response();
    clear_login_cookie(&mut response, state.config.tls());
    response
}

/// `Ok(Some((amr, totp step)))` when the second factor is right.
async fn check_second_factor(
    state: &AppState,
    customer_id: CustomerId,
    form: &SecondFactorForm,
    tx: &LoginTx,
) -> Result<Option<(&'static str, Option<u64>)>, ApiError> {
    let security = state.security.security_state(customer_id).await?;
    state.check_lock(&security)?;
    if let Some(code) = form.code.as_deref().filter(|c| !c.is_empty()) {
        let Some(credentials) = state.security.credentials(customer_id).await? else { return Ok(None) };
        let Some(secret) = credentials.totp_secret else { return Ok(None) };
        return Ok(crate::auth::crypto::totp_accept(&secret, code.trim(), state.now_s(), security.totp_last_step)
            .map(|step| ("otp", Some(step))));
    }
    let (Some(device_id), Some(signature)) = (form.device_id.as_deref(), form.signature.as_deref()) else {
        return Ok(None);
    };
    let Ok(device_id) = device_id.parse::<DeviceId>() else { return Ok(None) };
    let Some(device) = state.security.device(device_id).await? else { return Ok(None) };
    if device.customer_id != customer_id || device.revoked_at.is_some() {
        return Ok(None);
    }
    let (Some(key), Some(sig)) = (crate::auth::crypto::p256_public_key(&device.public_key), unb64(signature)) else {
        return Ok(None);
    };
    let message = login_message(&form.tx, &tx.device_nonce);
    Ok(crate::auth::crypto::p256_verify(&key, message.as_bytes(), &sig).then_some(("hwk", None)))
}

/// The token endpoint's form (both grants).
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

/// An OAuth2 error answer (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// `POST /oauth2/token`.
pub async fn token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<TokenForm>,
) -> Response {
    let Some(client) = form.client_id.as_deref().and_then(|id| client(&state, id)).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client_id");
    };
    match form.grant_type.as_deref() {
        Some("authorization_code") => code_grant(&state, &client, &form).await,
        Some("refresh_token") => refresh_grant(&state, &client, &form, peer).await,
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "use authorization_code or refresh_token"),
    }
}

fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed && ct_eq(b64(&sha256(verifier.as_bytes())).as_bytes(), challenge.as_bytes())
}

async fn code_grant(state: &AppState, client: &ClientConfig, form: &TokenForm) -> Response {
    let (Some(code), Some(verifier)) = (form.code.as_deref(), form.code_verifier.as_deref()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code and code_verifier are required");
    };
    let now = state.now();
    let found = {
        let mut codes = state.flows.codes.lock().unwrap_or_else(PoisonError::into_inner);
        match codes.get_mut(&sha256(code.as_bytes())) {
            None => None,
            Some(auth) if auth.redeemed => Some(Err((auth.session, auth.customer_id))),
            Some(auth) => {
                auth.redeemed = true;
                Some(Ok(auth.clone()))
            }
        }
    };
    let auth = match found {
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or expired code"),
        Some(Err((session, customer))) => {
            // A code presented twice was probably stolen: revoke what it gave (RFC 6749 §4.1.2).
            revoke_session(state, session, Some(customer), AuditKind::RefreshTokenReuse).await;
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code was already used");
        }
        Some(Ok(auth)) => auth,
    };
    if auth.expires_at <= now {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code has expired");
    }
    if auth.client_id != client.id || form.redirect_uri.as_deref() != Some(auth.redirect_uri.as_str()) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "client or redirect_uri does not match the code");
    }
    if !pkce_ok(verifier, &auth.code_challenge) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code_verifier does not match the code_challenge",
        );
    }
    let refresh = if auth.scope.split(' ').any(|s| s == "offline_access") {
        let token = random_token(32);
        let record = RefreshToken {
            hash: sha256(token.as_bytes()),
            session: auth.session,
            customer_id: auth.customer_id,
            client_id: auth.client_id.clone(),
            scope: auth.scope.clone(),
            amr: auth.amr.clone(),
            auth_time: auth.auth_time,
            issued_at: now,
            expires_at: refresh_expiry(state, auth.auth_time, now),
            state: RefreshTokenState::Active,
        };
        if let Err(e) = state.security.insert_refresh_token(record).await {
            return ApiError::from(e).into_response();
        }
        Some(token)
    } else {
        None
    };
    let id_token = if auth.scope.split(' ').any(|s| s == "openid") {
        let claims = IdClaims {
            iss: state.issuer.clone(),
            sub: auth.customer_id.to_string(),
            aud: auth.client_id.clone(),
            exp: state.now_s() + state.config.auth.access_token_ttl_s,
            iat: state.now_s(),
            auth_time: epoch_s(auth.auth_time),
            nonce: auth.nonce.clone(),
            amr: auth.amr.clone(),
            sid: auth.session.to_string(),
        };
        match state.keys.sign(&claims, "JWT") {
            Ok(t) => Some(t),
            Err(_) => return ApiError::Internal.into_response(),
        }
    } else {
        None
    };
    issue(
        state,
        &auth.customer_id,
        &auth.client_id,
        &auth.scope,
        &auth.amr,
        auth.auth_time,
        auth.session,
        refresh,
        id_token,
    )
}

fn refresh_expiry(state: &AppState, auth_time: Timestamp, now: Timestamp) -> Timestamp {
    let per_token = now + Duration::seconds(secs(state.config.auth.refresh_token_ttl_s));
    per_token.min(state.session_end(auth_time))
}

#[allow(clippy::too_many_arguments)]
fn issue(
    state: &AppState,
    customer: &CustomerId,
    client_id: &str,
    scope: &str,
    amr: &[String],
    auth_time: Timestamp,
    session: SessionId,
    refresh_token: Option<String>,
    id_token: Option<String>,
) -> Response {
    let now_s = state.now_s();
    let ttl = state.config.auth.access_token_ttl_s;
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: customer.to_string(),
        aud: state.config.auth.audience.clone(),
        exp: now_s + ttl,
        iat: now_s,
        jti: random_token(12),
        client_id: client_id.to_owned(),
        scope: scope.to_owned(),
        sid: session.to_string(),
        amr: amr.to_vec(),
        auth_time: epoch_s(auth_time),
    };
    let Ok(access_token) = state.keys.sign(&claims, "at+jwt") else { return ApiError::Internal.into_response() };
    let body = TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: ttl,
        refresh_token,
        id_token,
        scope: scope.to_owned(),
    };
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], axum::Json(body)).into_response()
}

async fn refresh_grant(state: &AppState, client: &ClientConfig, form: &TokenForm, peer: SocketAddr) -> Response {
    let Some(presented) = form.refresh_token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
    };
    let old_hash = sha256(presented.as_bytes());
    let now = state.now();
    let stored = match state.security.refresh_token(old_hash).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            if let Err(e) = state.rate_limit(peer.ip()) {
                return e.into_response();
            }
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if stored.client_id != client.id {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the refresh token belongs to another client");
    }
    let token = random_token(32);
    let next = RefreshToken {
        hash: sha256(token.as_bytes()),
        issued_at: now,
        expires_at: refresh_expiry(state, stored.auth_time, now),
        state: RefreshTokenState::Active,
        ..stored.clone()
    };
    match state.security.rotate_refresh_token(old_hash, next, now).await {
        Ok(Rotation::Rotated(old)) => {
            metrics::counter!("bp_token_refreshes_total").increment(1);
            issue(
                state,
                &old.customer_id,
                &old.client_id,
                &old.scope,
                &old.amr,
                old.auth_time,
                old.session,
                Some(token),
                None,
            )
        }
        Ok(Rotation::Reused { session, customer_id }) => {
            state.verifier.revoke(session);
            metrics::counter!("bp_refresh_token_reuse_total").increment(1);
            state
                .audit(
                    AuditKind::RefreshTokenReuse,
                    Some(customer_id),
                    serde_json::json!({ "client_id": client.id, "session": session.to_string() }),
                )
                .await
                .ok();
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token was already used; the session is revoked",
            )
        }
        Ok(Rotation::Revoked) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the session was revoked"),
        Ok(Rotation::Expired) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the refresh token has expired"),
        Ok(Rotation::Unknown) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token"),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn revoke_session(state: &AppState, session: SessionId, customer: Option<CustomerId>, kind: AuditKind) {
    state.verifier.revoke(session);
    if let Ok(true) = state.security.revoke_session(session, state.now()).await {
        state.audit(kind, customer, serde_json::json!({ "session": session.to_string() })).await.ok();
    }
}

/// The revocation form (RFC 7009).
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    token: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
}

/// `POST /oauth2/revoke`: revokes the session of a refresh or access token (sign-out).
pub async fn revoke(State(state): State<Arc<AppState>>, Form(form): Form<RevokeForm>) -> Response {
    let Some(client) = form.client_id.as_deref().and_then(|id| client(&state, id)).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client_id");
    };
    let Some(token) = form.token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    let session = match state.security.refresh_token(sha256(token.as_bytes())).await {
        Ok(Some(t)) if t.client_id == client.id => Some((t.session, Some(t.customer_id))),
        Ok(_) => state.verifier.session_of(token),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some((session, customer)) = session {
        revoke_session(&state, session, customer, AuditKind::SessionRevoked).await;
    }
    // RFC 7009 §2.2: unknown tokens get 200 as well.
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

/// `GET /oauth2/userinfo`.
pub async fn userinfo(State(state): State<Arc<AppState>>, auth: crate::state::Auth) -> Response {
    if !auth.0.has_scope("openid") {
        return ApiError::Forbidden("the access token lacks the 'openid' scope").into_response();
    }
    match state.ledger.customer(auth.0.customer_id).await {
        Ok(c) => {
            let mut body = serde_json::json!({ "sub": c.id.to_string() });
            if auth.0.has_scope("profile") {
                body["preferred_username"] = c.username.as_str().into();
                body["name"] = c.display_name().into();
            }
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1_000_000)
}

fn epoch_s(t: Timestamp) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
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

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · bp</title><link rel=\"stylesheet\" href=\"/oauth2/login.css\"></head>\
         <body><main><h1>{}</h1>{body}</main></body></html>\n",
        escape(title),
        escape(title)
    )
}

fn alert(error: Option<&str>) -> String {
    error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default()
}

fn password_page(client_name: &str, tx: &str, error: Option<&str>) -> String {
    page(
        "Sign in",
        &format!(
            "<p>to continue to <strong>{}</strong></p>{}\
             <form method=\"post\" action=\"/oauth2/login/password\">\
             <input type=\"hidden\" name=\"tx\" value=\"{}\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Continue</button></form>",
            escape(client_name),
            alert(error),
            escape(tx)
        ),
    )
}

fn second_factor_page(client_name: &str, tx: &str, device_nonce: &str, has_totp: bool, error: Option<&str>) -> String {
    let totp = if has_totp {
        format!(
            "<form method=\"post\" action=\"/oauth2/login/second-factor\">\
             <input type=\"hidden\" name=\"tx\" value=\"{}\">\
             <label for=\"code\">Code from your authenticator app</label>\
             <input id=\"code\" name=\"code\" inputmode=\"numeric\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" autocomplete=\"one-time-code\" required autofocus>\
             <button type=\"submit\">Sign in</button></form>",
            escape(tx)
        )
    } else {
        "<p>This account has no authenticator app; confirm with your registered phone.</p>".to_owned()
    };
    page(
        "Confirm it is you",
        &format!(
            "<p>to continue to <strong>{}</strong></p>{}{totp}\
             <details><summary>Use a registered device key instead</summary>\
             <p>Sign this text with the device key and paste the signature:</p>\
             <pre id=\"device-message\">{}</pre>\
             <form method=\"post\" action=\"/oauth2/login/second-factor\">\
             <input type=\"hidden\" name=\"tx\" value=\"{}\">\
             <label for=\"device_id\">Device id</label><input id=\"device_id\" name=\"device_id\" required>\
             <label for=\"signature\">Signature (base64url)</label><input id=\"signature\" name=\"signature\" required>\
             <button type=\"submit\">Sign in with the device</button></form></details>",
            escape(client_name),
            alert(error),
            escape(&login_message(tx, device_nonce)),
            escape(tx)
        ),
    )
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(page(title, &format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))))).into_response()
}

/// The login pages' stylesheet (a file, so the CSP needs no inline styles).
pub async fn login_css() -> Response {
    const CSS: &str = "body{font-family:system-ui,sans-serif;background:#f4f6f8;color:#1b1f24;margin:0}\
main{max-width:24rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem;margin-top:0}label{display:block;margin:1rem 0 .25rem;font-weight:600}\
input{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #6b7280;border-radius:4px;font-size:1rem}\
button{margin-top:1.25rem;width:100%;padding:.7rem;border:0;border-radius:4px;background:#0b5cad;color:#fff;font-size:1rem}\
:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}.error{color:#a4161a;font-weight:600}\
pre{white-space:pre-wrap;background:#eef1f4;padding:.5rem;font-size:.8rem}details{margin-top:1.5rem}";
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], CSS)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_only_its_verifier() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_ok(verifier, challenge));
        assert!(!pkce_ok("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK", challenge));
        assert!(!pkce_ok("short", challenge));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert!(!password_page("<script>", "tx\"", None).contains("<script>"));
    }

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
