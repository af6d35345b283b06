//! Device keys: P-256 public keys a customer's devices sign with (payment challenges, sign-in),
//! registered from a two-factor session with a proof of possession; at most `DEVICES_MAX` per
//! customer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::api::{DeviceList, DeviceView, NewDevice, device_registration_message};
use bp_core::ids::DeviceId;
use bp_core::security::{AuditKind, DEVICES_MAX, Device};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::Auth;
use crate::auth::crypto::{p256_public_key, p256_verify, unb64};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;
use crate::v1::check_name;

pub(super) async fn devices(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<DeviceList>> {
    let list = state.security.devices_of(auth.0.customer_id).await?;
    Ok(Json(DeviceList { devices: list.iter().filter(|d| d.revoked_at.is_none()).map(DeviceView::from).collect() }))
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
    let customer = auth.0.customer_id;
    let name = check_name(&body.name)?;
    let key_bytes = unb64(&body.public_key)
        .filter(|k| k.len() == 65)
        .ok_or_else(|| ApiError::Unprocessable("public_key must be a base64url SEC1 uncompressed P-256 key".into()))?;
    let key = p256_public_key(&key_bytes)
        .ok_or_else(|| ApiError::Unprocessable("public_key is not a point of P-256".into()))?;
    let proof = unb64(&body.proof).ok_or_else(|| ApiError::Unprocessable("proof must be base64url".into()))?;
    let message = device_registration_message(customer, &body.public_key);
    if !p256_verify(&key, message.as_bytes(), &proof) {
        return Err(ApiError::Unprocessable("proof is not the key's signature of the registration message".into()));
    }
    let _guard = state.auth.lock_customer(customer).await;
    let existing = state.security.devices_of(customer).await?;
    let active: Vec<&Device> = existing.iter().filter(|d| d.revoked_at.is_none()).collect();
    if active.iter().any(|d| d.public_key == key_bytes) {
        return Err(ApiError::Conflict("this key is already registered".into()));
    }
    if active.len() >= DEVICES_MAX {
        return Err(ApiError::Unprocessable("too many devices; remove one first".into()));
    }
    let device = Device {
        id: DeviceId::new_v7(),
        customer_id: customer,
        name,
        public_key: key_bytes,
        created_at: state.now(),
        revoked_at: None,
    };
    state.security.add_device(device.clone()).await?;
    state
        .auth
        .audit(AuditKind::DeviceAdded, Some(customer), serde_json::json!({ "device": device.id.to_string() }))
        .await?;
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
    let customer = auth.0.customer_id;
    if !state.security.revoke_device(customer, p.device_id, state.now()).await? {
        return Err(ApiError::NotFound("device"));
    }
    state
        .auth
        .audit(AuditKind::DeviceRemoved, Some(customer), serde_json::json!({ "device": p.device_id.to_string() }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
