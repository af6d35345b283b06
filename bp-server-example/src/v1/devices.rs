//! Device keys: P-256 public keys a customer's devices sign with (payment challenges, sign-in),
//! registered from a two-factor session with a proof of possession. The HTTP face of bp-core's
//! [`bp_core::sca::Sca`], which keeps the rules (the key and its proof, names, the bound on
//! devices, the audit); here, that the session is a two-factor one of this server.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::api::{DeviceList, DeviceView, NewDevice};
use bp_core::ids::DeviceId;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::Auth;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn devices(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<DeviceList>> {
    let list = state.payments.sca().devices(auth.0.customer_id).await?;
    Ok(Json(DeviceList { devices: list.iter().map(DeviceView::from).collect() }))
}

pub(super) async fn add_device(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiJson(body): ApiJson<NewDevice>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    if !auth.0.fully_authenticated() || auth.0.session.is_none() {
        return Err(ApiError::Forbidden(
            "register devices from a session signed in here with password and second factor",
        ));
    }
    let sca = state.payments.sca();
    let device = sca.register_device(auth.0.customer_id, &body.name, &body.public_key, &body.proof).await?;
    Ok((StatusCode::CREATED, Json(DeviceView::from(&device))))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct DevicePath {
    device_id: DeviceId,
}

pub(super) async fn delete_device(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<DevicePath>,
) -> ApiResult<StatusCode> {
    state.payments.sca().remove_device(auth.0.customer_id, p.device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
