//! The customer's profile (FR1, FR4) and photo.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bp_core::api::Profile;

use crate::auth::Auth;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn me(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<Profile>> {
    auth.require("profile")?;
    let customer = state.ledger.customer(auth.0.customer_id).await?;
    let has_photo = state.security.photo(customer.id).await?.is_some();
    Ok(Json(Profile::of(&customer, has_photo)))
}

pub(super) async fn photo(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Response> {
    auth.require("profile")?;
    let photo = state.security.photo(auth.0.customer_id).await?.ok_or(ApiError::NotFound("photo"))?;
    Ok((
        [
            (header::CONTENT_TYPE, photo.content_type),
            (header::CACHE_CONTROL, "private, max-age=300".to_owned()),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; sandbox".to_owned()),
        ],
        photo.bytes,
    )
        .into_response())
}
