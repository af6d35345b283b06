//! The provider's endpoints besides the sign-in: OpenID discovery, the JWKS, the token endpoint
//! (the authorization-code grant with PKCE, and rotating refresh tokens with reuse detection,
//! RFC 9700 §4.14), revocation (RFC 7009) and userinfo.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bp_core::Timestamp;
use bp_core::api::TokenResponse;
use bp_core::ids::{CustomerId, SessionId};
use bp_core::security::{AuditKind, RefreshToken, RefreshTokenState, Rotation};
use bp_core::transient::{Spend, TransientKind};
use chrono::Duration;
use serde::Deserialize;

use crate::auth::crypto::{b64, ct_eq, random_token, sha256};
use crate::auth::dpop::{DPOP_ALGS, ProofError};
use crate::auth::login::{AuthCode, PROMPTS};
use crate::auth::tokens::{AccessClaims, Acr, Confirmation, IdClaims};
use crate::auth::{Provider, secs};
use crate::config::{ClientConfig, TokenBinding};
use crate::http::client::ClientAddr;
use crate::http::problem::{ApiError, DPOP_NONCE};

/// The token endpoint's path: what its DPoP proofs name (after the issuer).
pub const TOKEN_PATH: &str = "/oauth2/token";

/// Scopes this server grants.
pub const SCOPES: [&str; 5] = ["openid", "profile", "accounts", "payments", "offline_access"];

/// `/.well-known/openid-configuration`.
pub async fn discovery(State(state): State<Arc<Provider>>) -> Response {
    let i = &state.issuer;
    let doc = serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/oauth2/authorize"),
        "token_endpoint": format!("{i}{TOKEN_PATH}"),
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
        "dpop_signing_alg_values_supported": DPOP_ALGS,
        "authorization_response_iss_parameter_supported": true,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "preferred_username", "name"],
        "acr_values_supported": Acr::ALL.map(Acr::uri),
        "prompt_values_supported": PROMPTS,
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(doc)).into_response()
}

/// `/oauth2/jwks`.
pub async fn jwks(State(state): State<Arc<Provider>>) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(state.keys.jwks().clone())).into_response()
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

/// `POST /oauth2/token`. A `DPoP` proof (RFC 9449 §5), when sent, binds the tokens to its key;
/// clients with `token_binding = "dpop"` must send one. With server nonces required, every
/// answer carries a fresh one.
pub async fn token(
    State(state): State<Arc<Provider>>,
    client_addr: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let mut response = token_answer(&state, client_addr, &headers, &form).await;
    if let Some(nonce) = state.dpop.nonce(state.now().timestamp()).and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert(&DPOP_NONCE, nonce);
    }
    response
}

async fn token_answer(state: &Provider, client_addr: ClientAddr, headers: &HeaderMap, form: &TokenForm) -> Response {
    let Some(client) = form.client_id.as_deref().and_then(|id| state.client(id)).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client_id");
    };
    let proof = match state.dpop_proof(headers, "POST", TOKEN_PATH, None).await {
        Ok(proof) => proof,
        Err(ProofError::Invalid(why)) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why),
        Err(ProofError::NonceRequired(why)) => return oauth_error(StatusCode::BAD_REQUEST, "use_dpop_nonce", why),
        Err(ProofError::Busy) => return ApiError::Unavailable.into_response(),
    };
    if proof.is_none() && client.token_binding == TokenBinding::Dpop {
        let why = "this client's token requests need a DPoP proof (RFC 9449)";
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why);
    }
    let jkt = proof.map(|p| p.jkt);
    match form.grant_type.as_deref() {
        Some("authorization_code") => code_grant(state, &client, form, jkt).await,
        Some("refresh_token") => refresh_grant(state, &client, form, client_addr, jkt).await,
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "use authorization_code or refresh_token"),
    }
}

fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed && ct_eq(b64(&sha256(verifier.as_bytes())).as_bytes(), challenge.as_bytes())
}

/// Redeems the code of `form` for `client`: the code's client, redirect URI and PKCE verifier
/// are checked before it is marked redeemed, so that whoever holds a leaked code without its
/// verifier cannot burn it. A code presented twice with its verifier was probably stolen with
/// it: the session it gave is revoked (RFC 6749 §4.1.2).
async fn redeem_code(state: &Provider, client: &ClientConfig, form: &TokenForm) -> Result<AuthCode, Response> {
    let (Some(code), Some(verifier)) = (form.code.as_deref(), form.code_verifier.as_deref()) else {
        return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code and code_verifier are required"));
    };
    let hash = sha256(code.as_bytes());
    let unknown = || oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or expired code");
    let stored = match state.security.transient(TransientKind::AuthorizationCode, hash).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return Err(unknown()),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let Ok(issued) = serde_json::from_slice::<AuthCode>(&stored.value) else {
        tracing::error!("a stored authorization code does not decode");
        return Err(unknown());
    };
    if issued.client_id != client.id || form.redirect_uri.as_deref() != Some(issued.redirect_uri.as_str()) {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "client or redirect_uri does not match the code",
        ));
    }
    if !pkce_ok(verifier, &issued.code_challenge) {
        let why = "the code_verifier does not match the code_challenge";
        return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why));
    }
    match state.security.spend_transient(TransientKind::AuthorizationCode, hash, state.now()).await {
        Ok(Spend::First(_)) => Ok(issued),
        Ok(Spend::Unknown) => Err(unknown()),
        Ok(Spend::Expired) => Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code has expired")),
        Ok(Spend::Again(_)) => {
            let (session, customer) = (issued.session, issued.customer_id);
            let detail = serde_json::json!({ "client_id": client.id });
            if let Err(e) = revoke_session(state, session, Some(customer), AuditKind::RefreshTokenReuse, detail).await {
                return Err(e.into_response());
            }
            Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code was already used"))
        }
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

async fn code_grant(state: &Provider, client: &ClientConfig, form: &TokenForm, jkt: Option<String>) -> Response {
    let auth = match redeem_code(state, client, form).await {
        Ok(auth) => auth,
        Err(refused) => return refused,
    };
    // The sign-in is the session's first activity: its idle deadline starts here.
    if let Err(e) = state.note_activity(auth.session, auth.customer_id).await {
        return e.into_response();
    }
    let now = state.now();
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
            // The session is bound to the key of the proof that redeemed the code, if any.
            dpop_jkt: jkt.clone(),
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
            exp: state.now_s() + state.config.access_token_ttl_s,
            iat: state.now_s(),
            auth_time: epoch_s(auth.auth_time),
            nonce: auth.nonce.clone(),
            amr: auth.amr.clone(),
            acr: Acr::of_amr(&auth.amr).map(|a| a.uri().to_owned()),
            sid: auth.session.to_string(),
        };
        match state.keys.sign(&claims, "JWT") {
            Ok(t) => Some(t),
            Err(_) => return ApiError::Internal.into_response(),
        }
    } else {
        None
    };
    let grant = Grant {
        customer: auth.customer_id,
        client_id: &auth.client_id,
        scope: &auth.scope,
        amr: &auth.amr,
        auth_time: auth.auth_time,
        session: auth.session,
        dpop_jkt: jkt,
    };
    issue(state, &grant, refresh, id_token)
}

fn refresh_expiry(state: &Provider, auth_time: Timestamp, now: Timestamp) -> Timestamp {
    let per_token = now + Duration::seconds(secs(state.config.refresh_token_ttl_s));
    per_token.min(state.session_end(auth_time))
}

/// What an access token grants: to whom, for which client, what and since when; and the key it is
/// bound to, if any.
#[derive(Debug)]
struct Grant<'a> {
    customer: CustomerId,
    client_id: &'a str,
    scope: &'a str,
    amr: &'a [String],
    auth_time: Timestamp,
    session: SessionId,
    dpop_jkt: Option<String>,
}

/// The token response of `grant`: a new access token (`token_type` DPoP when bound, RFC 9449
/// §5.1), with `refresh_token` and `id_token` when given.
fn issue(state: &Provider, grant: &Grant<'_>, refresh_token: Option<String>, id_token: Option<String>) -> Response {
    let now_s = state.now_s();
    let ttl = state.config.access_token_ttl_s;
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: grant.customer.to_string(),
        aud: state.config.audience.clone(),
        exp: now_s + ttl,
        iat: now_s,
        jti: random_token(12),
        client_id: grant.client_id.to_owned(),
        scope: grant.scope.to_owned(),
        sid: grant.session.to_string(),
        amr: grant.amr.to_vec(),
        auth_time: epoch_s(grant.auth_time),
        acr: Acr::of_amr(grant.amr).map(|a| a.uri().to_owned()),
        cnf: grant.dpop_jkt.clone().map(|jkt| Confirmation { jkt }),
    };
    let Ok(access_token) = state.keys.sign(&claims, "at+jwt") else { return ApiError::Internal.into_response() };
    let body = TokenResponse {
        access_token,
        token_type: if grant.dpop_jkt.is_some() { "DPoP" } else { "Bearer" }.to_owned(),
        expires_in: ttl,
        refresh_token,
        id_token,
        scope: grant.scope.to_owned(),
    };
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], axum::Json(body)).into_response()
}

/// Rotates a refresh token. A token of a session bound to a key needs a proof of that key,
/// checked before anything changes: a thief of the token without the key can neither use it nor
/// set off reuse detection. The new access token is bound to the proof's key, if any.
async fn refresh_grant(
    state: &Provider,
    client: &ClientConfig,
    form: &TokenForm,
    client_addr: ClientAddr,
    jkt: Option<String>,
) -> Response {
    let Some(presented) = form.refresh_token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
    };
    let old_hash = sha256(presented.as_bytes());
    let now = state.now();
    let stored = match state.security.refresh_token(old_hash).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            if let Err(e) = state.rate_limit(client_addr.source()).await {
                return e.into_response();
            }
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if stored.client_id != client.id {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the refresh token belongs to another client");
    }
    if let Some(bound) = &stored.dpop_jkt {
        let why = match &jkt {
            None => "the refresh token is bound to a key: send a DPoP proof of it",
            Some(proven) if proven != bound => "the refresh token is bound to another key",
            Some(_) => "",
        };
        if !why.is_empty() {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why);
        }
    }
    // A refresh is not activity, but it is refused after the idle deadline (which ends the session).
    match state.check_idle(stored.session, stored.customer_id, stored.auth_time).await {
        Ok(()) => {}
        Err(ApiError::SessionInactive(idle_s)) => {
            let description = format!("the session ended after {idle_s} s without activity; sign in again");
            let body = serde_json::json!({
                "error": "invalid_grant",
                "error_description": description,
                // Tells the client why, so that it can say so to the customer.
                "session_ended": "inactivity",
            });
            return (StatusCode::BAD_REQUEST, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response();
        }
        Err(e) => return e.into_response(),
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
            let grant = Grant {
                customer: old.customer_id,
                client_id: &old.client_id,
                scope: &old.scope,
                amr: &old.amr,
                auth_time: old.auth_time,
                session: old.session,
                dpop_jkt: jkt,
            };
            issue(state, &grant, Some(token), None)
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

/// Revokes `session` at once in this process, then in the store, and audits it once (the audit
/// entry names the session, which ends its event streams). The store keeps it whether or not it
/// has refresh tokens, so that its access tokens stay refused after a restart.
pub(super) async fn revoke_session(
    state: &Provider,
    session: SessionId,
    customer: Option<CustomerId>,
    kind: AuditKind,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    state.verifier.revoke(session);
    if state.security.revoke_session(session, state.now()).await? {
        let mut detail = detail;
        detail["session"] = session.to_string().into();
        state.audit(kind, customer, detail).await?;
    }
    Ok(())
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
pub async fn revoke(State(state): State<Arc<Provider>>, Form(form): Form<RevokeForm>) -> Response {
    let Some(client) = form.client_id.as_deref().and_then(|id| state.client(id)).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client_id");
    };
    let Some(token) = form.token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    // Only the client a token was issued to may revoke it; another client's token, like an
    // unknown one, is answered 200 and left alone (RFC 7009 §2.1, §2.2).
    let session = match state.security.refresh_token(sha256(token.as_bytes())).await {
        Ok(Some(t)) => (t.client_id == client.id).then_some((t.session, Some(t.customer_id))),
        Ok(None) => {
            state.verifier.session_of(token).filter(|s| s.client_id == client.id).map(|s| (s.session, s.customer))
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some((session, customer)) = session {
        let detail = serde_json::json!({ "client_id": client.id });
        if let Err(e) = revoke_session(&state, session, customer, AuditKind::SessionRevoked, detail).await {
            return e.into_response();
        }
    }
    // RFC 7009 §2.2: unknown tokens get 200 as well.
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

/// `GET /oauth2/userinfo`.
pub async fn userinfo(
    State(state): State<Arc<Provider>>,
    crate::auth::Passive(auth): crate::auth::Passive,
) -> Response {
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

fn epoch_s(t: Timestamp) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
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
}
