//! Device keys: P-256 public keys a customer's devices sign with (payment challenges, sign-in).
//! The HTTP face of bp-core's [`bp_core::sca::Sca`], which keeps the rules: a key is registered
//! only once a challenge is answered — by a device the customer has, or for a first device by a
//! TOTP code soon after a sign-in — and removed only from a recent sign-in (else a step-up
//! problem), both audited; the key and its proof, names and the bound on devices. Every route
//! needs the `payments` scope: devices authorize payments.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::api::{ChallengeView, DeviceList, DeviceResponse, DeviceView, NewDevice, ScaAnswer};
use bp_core::ids::DeviceId;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::Payer;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn devices(State(state): State<Arc<AppState>>, Payer(auth): Payer) -> ApiResult<Json<DeviceList>> {
    let list = state.payments.sca().devices(auth.0.customer_id).await?;
    Ok(Json(DeviceList { devices: list.iter().map(DeviceView::from).collect() }))
}

pub(super) async fn add_device(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiJson(body): ApiJson<NewDevice>,
) -> ApiResult<(StatusCode, Json<DeviceResponse>)> {
    let (customer, signed_in_at) = (auth.0.customer_id, auth.0.signed_in_at());
    let sca = state.payments.sca();
    let begun = sca
        .begin_device_registration(customer, &body.name, &body.public_key, &body.proof, signed_in_at)
        .await
        .map_err(|e| ApiError::from(e).in_scheme(auth.0.scheme()))?;
    let device = DeviceView { id: begun.device_id, name: body.name.trim().to_owned(), created_at: state.now() };
    let sca = Some(ChallengeView::of(&begun.challenge, begun.methods));
    Ok((StatusCode::ACCEPTED, Json(DeviceResponse { device, sca })))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct DevicePath {
    device_id: DeviceId,
}

pub(super) async fn confirm_device(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<DevicePath>,
    ApiJson(answer): ApiJson<ScaAnswer>,
) -> ApiResult<(StatusCode, Json<DeviceResponse>)> {
    let device = state.payments.sca().confirm_device(auth.0.customer_id, p.device_id, &answer).await?;
    Ok((StatusCode::CREATED, Json(DeviceResponse { device: DeviceView::from(&device), sca: None })))
}

pub(super) async fn delete_device(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<DevicePath>,
) -> ApiResult<StatusCode> {
    let sca = state.payments.sca();
    let removed = sca.remove_device(auth.0.customer_id, p.device_id, auth.0.signed_in_at()).await;
    removed.map_err(|e| ApiError::from(e).in_scheme(auth.0.scheme()))?;
    Ok(StatusCode::NO_CONTENT)
}
