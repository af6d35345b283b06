//! The provider's endpoints besides the sign-in: OpenID discovery, the JWKS, the token endpoint
//! (the authorization-code grant with PKCE, and rotating refresh tokens with reuse detection,
//! RFC 9700 §4.14), revocation (RFC 7009) and userinfo.

use std::sync::{Arc, PoisonError};

use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bp_core::Timestamp;
use bp_core::api::TokenResponse;
use bp_core::ids::{CustomerId, SessionId};
use bp_core::security::{AuditKind, RefreshToken, RefreshTokenState, Rotation};
use chrono::Duration;
use serde::Deserialize;

use crate::auth::crypto::{b64, ct_eq, random_token, sha256};
use crate::auth::tokens::{AccessClaims, IdClaims};
use crate::auth::{Provider, secs};
use crate::config::ClientConfig;
use crate::http::client::ClientAddr;
use crate::http::problem::ApiError;

/// Scopes this server grants.
pub const SCOPES: [&str; 5] = ["openid", "profile", "accounts", "payments", "offline_access"];

/// `/.well-known/openid-configuration`.
pub async fn discovery(State(state): State<Arc<Provider>>) -> Response {
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

/// `POST /oauth2/token`.
pub async fn token(
    State(state): State<Arc<Provider>>,
    client_addr: ClientAddr,
    Form(form): Form<TokenForm>,
) -> Response {
    let Some(client) = form.client_id.as_deref().and_then(|id| state.client(id)).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client_id");
    };
    match form.grant_type.as_deref() {
        Some("authorization_code") => code_grant(&state, &client, &form).await,
        Some("refresh_token") => refresh_grant(&state, &client, &form, client_addr).await,
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "use authorization_code or refresh_token"),
    }
}

fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed && ct_eq(b64(&sha256(verifier.as_bytes())).as_bytes(), challenge.as_bytes())
}

async fn code_grant(state: &Provider, client: &ClientConfig, form: &TokenForm) -> Response {
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
            exp: state.now_s() + state.config.access_token_ttl_s,
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

fn refresh_expiry(state: &Provider, auth_time: Timestamp, now: Timestamp) -> Timestamp {
    let per_token = now + Duration::seconds(secs(state.config.refresh_token_ttl_s));
    per_token.min(state.session_end(auth_time))
}

#[allow(clippy::too_many_arguments)]
fn issue(
    state: &Provider,
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
    let ttl = state.config.access_token_ttl_s;
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: customer.to_string(),
        aud: state.config.audience.clone(),
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

async fn refresh_grant(state: &Provider, client: &ClientConfig, form: &TokenForm, client_addr: ClientAddr) -> Response {
    let Some(presented) = form.refresh_token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
    };
    let old_hash = sha256(presented.as_bytes());
    let now = state.now();
    let stored = match state.security.refresh_token(old_hash).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            if let Err(e) = state.rate_limit(client_addr.source()) {
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

async fn revoke_session(state: &Provider, session: SessionId, customer: Option<CustomerId>, kind: AuditKind) {
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
pub async fn revoke(State(state): State<Arc<Provider>>, Form(form): Form<RevokeForm>) -> Response {
    let Some(client) = form.client_id.as_deref().and_then(|id| state.client(id)).cloned() else {
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
pub async fn userinfo(State(state): State<Arc<Provider>>, auth: crate::auth::Auth) -> Response {
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
