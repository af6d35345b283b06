//! The external services the customer used (FR3): interbank and international transfers, loans,
//! newest first, filtered and paged like an account's history.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use bp_core::Timestamp;
use bp_core::api::ServiceList;
use bp_core::service_record::{ServiceKind, ServiceStatus};
use bp_core::service_store::ServiceQuery;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::Auth;
use crate::http::extract::ApiQuery;
use crate::http::problem::{ApiResult, bad_cursor, bad_filter};
use crate::state::AppState;

/// Filters of the customer's services.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ServicesQuery {
    /// Only services of this kind.
    kind: Option<ServiceKind>,
    /// Only services in this status.
    status: Option<ServiceStatus>,
    /// Only services requested at or after this time (RFC 3339).
    from: Option<Timestamp>,
    /// Only services requested before this time (RFC 3339).
    to: Option<Timestamp>,
    /// The `next_cursor` of the previous page.
    #[schemars(regex(pattern = r"^[0-9]{1,19}$"))]
    cursor: Option<String>,
    /// Page length, 1 to 500 (default 50).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

impl ServicesQuery {
    /// The names of the query's parameters, as a problem names them.
    const PARAMETERS: &[&str] = &["kind", "status", "from", "to", "cursor", "limit"];
}

pub(super) async fn services(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ServicesQuery>,
) -> ApiResult<Json<ServiceList>> {
    auth.require("accounts")?;
    let connected = state.external.is_some();
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| bad_cursor())?),
    };
    let query = ServiceQuery { kind: q.kind, status: q.status, from: q.from, to: q.to, before, limit: q.limit };
    // An empty range is a question with an empty answer, as in an account's history; the other
    // parameters are checked all the same.
    if query.validate_unless_empty().map_err(|e| bad_filter(e, ServicesQuery::PARAMETERS))? {
        return Ok(Json(ServiceList {
            services: Vec::new(),
            external_services_connected: connected,
            next_cursor: None,
        }));
    }
    let page = state.services.service_records_of(auth.0.customer_id, &query).await?;
    Ok(Json(ServiceList {
        services: page.items,
        external_services_connected: connected,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}
