//! The SEPA rail's webhook receivers: status reports (a pacs.002 about one of our payments)
//! and incoming payments (a pacs.008 to one of our IBANs), authenticated with
//! `bp_external::WebhookVerifier`. A delivery is answered `2xx` only once what it says is
//! written, so that the rail delivers it again otherwise; deliveries may come in any order and
//! any number of times. Signatures, secrets and bodies are never logged.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bp_core::external::RailId;
use bp_core::external::lifecycle::Input;
use bp_core::service_store::IncomingOutcome;
use bp_external::WebhookError;
use bp_external::contract::{PROBLEM_JSON, PROBLEM_REFUSED, Problem, SIGNATURE_HEADER};

use crate::external::{Applied, INCOMING_WEBHOOK_PATH, STATUS_WEBHOOK_PATH, apply_input, record_of_key};
use crate::http::problem::problem_response;
use crate::state::AppState;

/// The receivers' routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(STATUS_WEBHOOK_PATH, post(status_report)).route(INCOMING_WEBHOOK_PATH, post(incoming))
}

/// The answer when no rail is connected.
fn unavailable() -> Response {
    problem_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "external-services-unavailable",
        "External services are not connected",
        "this server has no payment rail configured",
    )
}

/// The problem answering a delivery the verifier refused; `Replayed` is answered by the caller.
fn refused(kind: &str, e: &WebhookError) -> Response {
    metrics::counter!("bp_rail_webhooks_refused_total", "kind" => kind.to_owned()).increment(1);
    match e {
        WebhookError::Body(_) => {
            tracing::warn!(webhook = kind, "a rail webhook's body is not the expected message");
            problem_response(StatusCode::BAD_REQUEST, "malformed-message", "Malformed message", &e.to_string())
        }
        _ => {
            // The error names only what failed (never the header, a signature or a secret).
            tracing::warn!(webhook = kind, error = %e, "a rail webhook was not authenticated");
            problem_response(StatusCode::UNAUTHORIZED, "bad-signature", "Webhook not authenticated", &e.to_string())
        }
    }
}

fn signature(headers: &HeaderMap) -> Option<&str> {
    headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok())
}

/// `POST /rail/sepa/webhooks/status`: a status report, applied to its payment's record.
async fn status_report(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(external) = state.external.as_deref() else { return unavailable() };
    let report = match external.verifier.status_report(signature(&headers), &body, state.now().timestamp()) {
        Ok(report) => report,
        // Accepted before: that delivery was applied (or answered 5xx and delivered anew).
        Err(WebhookError::Replayed) => return StatusCode::OK.into_response(),
        Err(e) => return refused("status", &e),
    };
    let keys = report
        .transactions
        .iter()
        .flat_map(|t| [t.end_to_end_id.as_deref(), t.tx_id.as_deref()])
        .chain([report.original_message_id.as_deref()])
        .flatten()
        .filter_map(|k| bp_core::external::CallKey::parse(k).ok())
        .collect::<std::collections::BTreeSet<_>>();
    for key in keys {
        let (Some(id), Some(answer)) = (record_of_key(&key), report.answer_for(&key)) else { continue };
        let input = Input::Webhook(answer);
        match apply_input(state.services.as_ref(), state.clock.as_ref(), &external.policy, id, &input).await {
            Ok(Applied::Written(..)) => state.relay_waker.notify_one(),
            Ok(Applied::Unchanged | Applied::Conflict(_)) => {}
            Ok(Applied::NotFound) => {
                tracing::warn!(service = %id, "a status report about no payment of ours");
            }
            Err(e) => {
                // Not written: a 5xx makes the rail deliver it again.
                tracing::warn!(service = %id, error = %e, "applying a status report failed");
                return problem_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the report could not be stored; deliver it again",
                );
            }
        }
    }
    StatusCode::OK.into_response()
}

/// `POST /rail/sepa/webhooks/incoming`: an incoming payment, credited once however often it is
/// delivered, or refused with its ISO reason code (`urn:bp:rail:refused`, `reason`).
async fn incoming(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(external) = state.external.as_deref() else { return unavailable() };
    let message = match external.verifier.incoming(signature(&headers), &body, state.now().timestamp()) {
        Ok(message) => message,
        Err(WebhookError::Replayed) => return StatusCode::OK.into_response(),
        Err(e) => return refused("incoming", &e),
    };
    for tx in &message.transactions {
        let credit = tx.incoming();
        match state.services.credit_incoming(&external.bank, RailId::SepaCreditTransfer, &credit).await {
            Ok(IncomingOutcome::Credited { transfer, replayed }) => {
                if !replayed {
                    state.relay_waker.notify_one();
                    metrics::counter!("bp_rail_incoming_credited_total").increment(1);
                }
                tracing::info!(transfer = %transfer.id, replayed, "incoming payment credited");
            }
            Ok(IncomingOutcome::Returned { reason }) => {
                metrics::counter!("bp_rail_incoming_returned_total", "reason" => reason.to_string()).increment(1);
                tracing::info!(reason = %reason, "incoming payment returned");
                let problem = Problem::new(PROBLEM_REFUSED, "incoming payment refused", Some(reason.as_str()));
                let body = serde_json::to_string(&problem).unwrap_or_default();
                return (StatusCode::UNPROCESSABLE_ENTITY, [(header::CONTENT_TYPE, PROBLEM_JSON)], body)
                    .into_response();
            }
            Err(bp_core::Error::Ledger(e)) => {
                // Another payment's id (an idempotency conflict): delivering it again will not help.
                tracing::error!(error = %e, "an incoming payment conflicts with a credited one");
                return problem_response(
                    StatusCode::CONFLICT,
                    "conflict",
                    "Conflict",
                    "this payment conflicts with another",
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "crediting an incoming payment failed");
                return problem_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the payment could not be stored; deliver it again",
                );
            }
        }
    }
    StatusCode::OK.into_response()
}
