//! The caller of an API route, from the access token of its request — a bearer token, or a
//! DPoP-bound token with its proof of possession ([`authenticate_request`]): [`Auth`] for every
//! `/v1` route, [`Payer`] where the `payments` scope is needed before the body is read. Both take
//! any router state that holds the [`Provider`] ([`HasProvider`]).

use std::sync::Arc;

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::{Operation, SecurityRequirement};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use crate::auth::Provider;
use crate::auth::activity::BACKGROUND_HEADER;
use crate::auth::dpop::ProofError;
use crate::auth::tokens::{Caller, TokenError};
use crate::http::problem::{ApiError, AuthScheme, Refusal};

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
    /// Refuses unless the token carries `scope`; for `payments`, also unless its sign-in used
    /// two factors (`amr`): our own tokens always do, an external issuer's must say so.
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if !self.0.has_scope(scope) {
            return Err(ApiError::Forbidden(match scope {
                "accounts" => "the access token lacks the 'accounts' scope",
                "payments" => "the access token lacks the 'payments' scope",
                "profile" => "the access token lacks the 'profile' scope",
                _ => "the access token lacks a required scope",
            }));
        }
        if scope == "payments" && !self.0.fully_authenticated() {
            return Err(ApiError::Forbidden("payments need a sign-in with two factors (the token's amr)"));
        }
        Ok(())
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

/// The access token of a request and the scheme it came with: `Authorization: Bearer <token>`
/// or `Authorization: DPoP <token>`.
pub fn credentials(headers: &HeaderMap) -> Result<(AuthScheme, &str), ApiError> {
    let value = headers.get(AUTHORIZATION).ok_or(ApiError::Unauthorized("missing access token"))?;
    let malformed = ApiError::Unauthorized("malformed authorization");
    let (scheme, token) = value.to_str().ok().and_then(|v| v.split_once(' ')).ok_or(malformed)?;
    let token = token.trim();
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        AuthScheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        AuthScheme::Dpop
    } else {
        return Err(ApiError::Unauthorized("the authorization scheme is neither Bearer nor DPoP"));
    };
    if token.is_empty() {
        return Err(ApiError::Unauthorized("malformed authorization"));
    }
    Ok((scheme, token))
}

/// The caller of a request to `path` with `method`: its access token, and for a DPoP-bound token
/// (`cnf.jkt`) the `DPoP` scheme and a proof of the token's key for this request and this token
/// (RFC 9449 §7). A bound token with the `Bearer` scheme is refused, and so is an unbound one with
/// the `DPoP` scheme. A session of ours past its idle deadline is ended and refused
/// ([`crate::auth::activity`]); the request is not counted as activity here.
pub async fn authenticate_request(
    provider: &Provider,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
) -> Result<Caller, ApiError> {
    let caller = proven_caller(provider, headers, method, path).await?;
    if let (Some(session), Some(signed_in)) = (caller.session, caller.auth_time) {
        let signed_in = chrono::DateTime::from_timestamp(i64::try_from(signed_in).unwrap_or(i64::MAX), 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        provider.check_idle(session, caller.customer_id, signed_in).await?;
    }
    Ok(caller)
}

/// The caller of a request's access token, with its DPoP proof checked when it is bound.
async fn proven_caller(
    provider: &Provider,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
) -> Result<Caller, ApiError> {
    let (scheme, token) = credentials(headers)?;
    let caller = authenticate(provider, token).await?;
    let refused = |scheme, refusal, reason| ApiError::Refused { scheme, refusal, reason, nonce: None };
    match (scheme, caller.dpop_jkt.as_deref()) {
        (AuthScheme::Bearer, None) => Ok(caller),
        (AuthScheme::Bearer, Some(_)) => Err(refused(
            AuthScheme::Dpop,
            Refusal::InvalidToken,
            "the access token is DPoP-bound: send it with the DPoP scheme and a proof",
        )),
        (AuthScheme::Dpop, None) => Err(refused(
            AuthScheme::Bearer,
            Refusal::InvalidToken,
            "the access token is not DPoP-bound: send it with the Bearer scheme",
        )),
        (AuthScheme::Dpop, Some(jkt)) => {
            let proof = provider
                .dpop_proof(headers, method.as_str(), path, Some(token))
                .await
                .map_err(|e| proof_refused(provider, e))?
                .ok_or(refused(AuthScheme::Dpop, Refusal::InvalidDpopProof, "a DPoP proof is required"))?;
            if proof.jkt != jkt {
                return Err(refused(
                    AuthScheme::Dpop,
                    Refusal::InvalidDpopProof,
                    "the proof is signed by another key than the token is bound to",
                ));
            }
            Ok(caller)
        }
    }
}

/// The problem of a refused proof at the API: `invalid_dpop_proof`, or `use_dpop_nonce` with a
/// fresh nonce; a full replay cache is a passing unavailability.
fn proof_refused(provider: &Provider, e: ProofError) -> ApiError {
    match e {
        ProofError::Invalid(reason) => {
            ApiError::Refused { scheme: AuthScheme::Dpop, refusal: Refusal::InvalidDpopProof, reason, nonce: None }
        }
        ProofError::NonceRequired(reason) => ApiError::Refused {
            scheme: AuthScheme::Dpop,
            refusal: Refusal::UseDpopNonce,
            reason,
            nonce: provider.dpop.nonce(provider.now().timestamp()),
        },
        ProofError::Busy => ApiError::Unavailable,
    }
}

impl<S: HasProvider> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    /// Authenticates the request and counts it as its customer's activity, unless it is marked
    /// `BP-Activity: background`.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let provider = state.provider();
        let caller = authenticate_request(provider, &parts.headers, &parts.method, parts.uri.path()).await?;
        let background = parts
            .headers
            .get(BACKGROUND_HEADER)
            .is_some_and(|v| v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("background")));
        if let (Some(session), false) = (caller.session, background) {
            provider.note_activity(session, caller.customer_id).await?;
        }
        Ok(Auth(caller))
    }
}

/// The caller of a route whose requests are not the customer's activity (an app makes them by
/// itself: stream tickets, userinfo). Authenticated as [`Auth`] is, idle deadline included.
#[derive(Clone, Debug)]
pub struct Passive(pub Auth);

impl<S: HasProvider> FromRequestParts<S> for Passive {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate_request(state.provider(), &parts.headers, &parts.method, parts.uri.path())
            .await
            .map(|caller| Passive(Auth(caller)))
    }
}

impl OperationInput for Passive {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Auth::operation_input(ctx, operation);
    }
}

/// The caller of an access token: ours, or the external issuer's when configured.
pub async fn authenticate(provider: &Provider, token: &str) -> Result<Caller, ApiError> {
    let refused = |e| match e {
        TokenError::Invalid(reason) => ApiError::Unauthorized(reason),
        TokenError::Key(_) => ApiError::Internal,
    };
    // A token whose signature was checked before is ours (the verifier caches only its own),
    // and its header needs no second reading.
    if let Some(checked) = provider.verifier.verify_cached(token, provider.now_s()) {
        return checked.map_err(refused);
    }
    let ours = jsonwebtoken::decode_header(token)
        .map_err(|_| ApiError::Unauthorized("malformed access token"))?
        .kid
        .is_some_and(|kid| kid == provider.keys.kid());
    if ours || provider.external.is_none() {
        return provider.verifier.verify(token, provider.now_s()).map_err(refused);
    }
    let external = provider.external.as_ref().ok_or(ApiError::Unauthorized("unknown token issuer"))?;
    let claims = external.verify(token).await.map_err(refused)?;
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
        dpop_jkt: claims.get("cnf").and_then(|c| c.get("jkt")).and_then(|j| j.as_str()).map(str::to_owned),
    })
}

impl OperationInput for Auth {
    fn operation_input(_ctx: &mut GenContext, operation: &mut Operation) {
        // Either scheme: a bearer token, or a DPoP-bound one with its proof.
        for scheme in ["bearer", "dpop"] {
            let mut requirement = SecurityRequirement::new();
            requirement.insert(scheme.to_owned(), Vec::new());
            operation.security.push(requirement);
        }
    }
}
