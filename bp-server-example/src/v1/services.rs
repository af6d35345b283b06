//! The external services the customer used (FR3): interbank and international transfers, loans.

use axum::Json;
use bp_core::api::ServiceList;

use crate::auth::Auth;
use crate::http::problem::ApiResult;

pub(super) async fn services(auth: Auth) -> ApiResult<Json<ServiceList>> {
    auth.require("accounts")?;
    // External services (interbank, international, loans) are not connected to this server
    // yet; the list says so instead of pretending the customer has none.
    Ok(Json(ServiceList { services: Vec::new(), external_services_connected: false }))
}
