//! Passkeys (WebAuthn credentials that sign the customer in with their username and the
//! authenticator's biometric or PIN). The HTTP face of the provider's Relying Party
//! ([`crate::auth::passkey`]) and of bp-core's rules ([`bp_core::sca::Sca`]): a passkey is
//! registered in two steps — options, then the authenticator's credential — only from a sign-in
//! at most `sca.recent_sign_in_max_age_s` old (else a step-up problem), and removed likewise;
//! both audited. Every route needs the `profile` scope (the web app's tokens have no `payments`)
//! and a sign-in with two factors ([`Manager`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::api::{NewPasskey, PasskeyCredential, PasskeyList, PasskeyRegistration, PasskeyView};
use bp_core::ids::PasskeyId;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::Auth;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// The caller managing their passkeys: a token with the `profile` scope from a sign-in with two
/// factors (a passkey manages sign-in itself, so a one-factor session must not add one).
pub(super) struct Manager(pub Auth);

impl<S: crate::auth::bearer::HasProvider + Send + Sync> axum::extract::FromRequestParts<S> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        auth.require("profile")?;
        if !auth.0.fully_authenticated() {
            return Err(ApiError::Forbidden("passkeys need a sign-in with two factors (the token's amr)"));
        }
        Ok(Self(auth))
    }
}

impl aide::OperationInput for Manager {
    fn operation_input(ctx: &mut aide::generate::GenContext, operation: &mut aide::openapi::Operation) {
        Auth::operation_input(ctx, operation);
    }
}

pub(super) async fn passkeys(
    State(state): State<Arc<AppState>>,
    Manager(auth): Manager,
) -> ApiResult<Json<PasskeyList>> {
    let list = state.payments.sca().passkeys(auth.0.customer_id).await?;
    Ok(Json(PasskeyList { passkeys: list.iter().map(PasskeyView::from).collect() }))
}

pub(super) async fn add_passkey(
    State(state): State<Arc<AppState>>,
    Manager(auth): Manager,
    ApiJson(body): ApiJson<NewPasskey>,
) -> ApiResult<(StatusCode, Json<PasskeyRegistration>)> {
    let (customer, signed_in_at) = (auth.0.customer_id, auth.0.signed_in_at());
    let sca = state.payments.sca();
    let name = sca
        .may_begin_passkey(customer, &body.name, signed_in_at)
        .await
        .map_err(|e| ApiError::from(e).in_scheme(auth.0.scheme()))?;
    let customer = state.ledger.customer(customer).await?;
    let begun = state.auth.passkeys.begin_registration(&state.auth, sca, &customer, name).await?;
    Ok((StatusCode::ACCEPTED, Json(begun)))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct PasskeyPath {
    passkey_id: PasskeyId,
}

pub(super) async fn confirm_passkey(
    State(state): State<Arc<AppState>>,
    Manager(auth): Manager,
    ApiPath(p): ApiPath<PasskeyPath>,
    ApiJson(credential): ApiJson<PasskeyCredential>,
) -> ApiResult<(StatusCode, Json<PasskeyView>)> {
    let sca = state.payments.sca();
    let passkey = state
        .auth
        .passkeys
        .finish_registration(&state.auth, sca, auth.0.customer_id, p.passkey_id, &credential)
        .await?;
    Ok((StatusCode::CREATED, Json(PasskeyView::from(&passkey))))
}

pub(super) async fn delete_passkey(
    State(state): State<Arc<AppState>>,
    Manager(auth): Manager,
    ApiPath(p): ApiPath<PasskeyPath>,
) -> ApiResult<StatusCode> {
    let sca = state.payments.sca();
    let removed = sca.remove_passkey(auth.0.customer_id, p.passkey_id, auth.0.signed_in_at()).await;
    removed.map_err(|e| ApiError::from(e).in_scheme(auth.0.scheme()))?;
    Ok(StatusCode::NO_CONTENT)
}
