//! The caller of an API route, from the bearer token of its request: [`Auth`] for every `/v1`
//! route, [`Payer`] where the `payments` scope is needed before the body is read. Both take any
//! router state that holds the [`Provider`] ([`HasProvider`]).

use std::sync::Arc;

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::{Operation, SecurityRequirement};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::auth::Provider;
use crate::auth::tokens::{Caller, TokenError};
use crate::http::problem::ApiError;

/// A router state that holds the provider: the provider's own, or the state of a server that
/// composes it. (A trait of ours rather than axum's `FromRef`, which the orphan rule does not let
/// the server implement between two `Arc`s.)
pub trait HasProvider: Send + Sync {
    /// The provider.
    fn provider(&self) -> &Provider;
}

impl HasProvider for Arc<Provider> {
    fn provider(&self) -> &Provider {
        self
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

impl<S: HasProvider> FromRequestParts<S> for Payer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
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

impl<S: HasProvider> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized("missing bearer token"))?;
        authenticate(state.provider(), token).await.map(Auth)
    }
}

/// The caller of an access token: ours, or the external issuer's when configured.
pub async fn authenticate(provider: &Provider, token: &str) -> Result<Caller, ApiError> {
    let ours = jsonwebtoken::decode_header(token)
        .map_err(|_| ApiError::Unauthorized("malformed access token"))?
        .kid
        .is_some_and(|kid| kid == provider.keys.kid());
    if ours || provider.external.is_none() {
        return provider.verifier.verify(token, provider.now_s()).map_err(|e| match e {
            TokenError::Invalid(reason) => ApiError::Unauthorized(reason),
            TokenError::Key(_) => ApiError::Internal,
        });
    }
    let external = provider.external.as_ref().ok_or(ApiError::Unauthorized("unknown token issuer"))?;
    let claims = external.verify(token).await.map_err(|e| match e {
        TokenError::Invalid(reason) => ApiError::Unauthorized(reason),
        TokenError::Key(_) => ApiError::Internal,
    })?;
    let username = claims
        .get(&external.config.username_claim)
        .and_then(|v| v.as_str())
        .ok_or(ApiError::Unauthorized("the token names no customer"))?;
    let username = bp_core::customer::Username::parse(username)
        .map_err(|_| ApiError::Unauthorized("the token names no customer of this bank"))?;
    let customer = provider
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
