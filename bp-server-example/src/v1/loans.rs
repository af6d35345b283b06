//! Loans (FR6): applying for one, reading it with its schedule, accepting its offer and repaying
//! it early. The HTTP face of bp-core's `external::loan` state machine, applied by `loans`; the
//! worker (`jobs`) sends the application to the loan provider and collects the instalments.
//! A loan is its customer's only: another customer's id gets the same 404 as an unknown one.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::Timestamp;
use bp_core::external::ReasonCode;
use bp_core::external::loan::{self, LoanDetails, LoanInput, LoanPolicy, NewLoan};
use bp_core::ids::{AccountId, CustomerId, ServiceRecordId};
use bp_core::money::Money;
use bp_core::payments::transfer_id;
use bp_core::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::transfers::IdempotencyKey;
use crate::auth::{Auth, Payer};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::loans::{LoanApplied, LoanStep};
use crate::state::AppState;

/// An application for a loan.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewLoanRequest {
    /// The customer's account the loan is paid into and repaid from.
    account: AccountId,
    /// The principal asked for, in the account's currency.
    amount: Money,
    /// The term asked for, in monthly instalments.
    term_months: u32,
    /// What the loan is for (1 to 140 characters, no control characters).
    purpose: String,
}

/// An early repayment of principal.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRepayment {
    /// The principal repaid, in the loan's currency: at most the outstanding principal (all of
    /// it closes the loan).
    amount: Money,
}

/// A loan as its customer sees it.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct LoanView {
    /// The loan's id (its service record's).
    id: ServiceRecordId,
    /// Where it is: requested, submitted, unknown (being decided), offered, rejected, active,
    /// in_arrears, closed.
    status: ServiceStatus,
    /// The account it is paid into and repaid from.
    account_id: AccountId,
    /// The principal.
    amount: Money,
    /// The provider's reason code, when declined.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<ReasonCode>,
    /// When the customer applied.
    created_at: Timestamp,
    /// Its last change.
    updated_at: Timestamp,
    /// The decision, the offer, the schedule with paid and due instalments, the outstanding
    /// principal, arrears and early repayments.
    loan: LoanDetails,
}

impl LoanView {
    fn of(record: &ServiceRecord) -> ApiResult<Self> {
        let Some(loan) = LoanDetails::of(record) else {
            tracing::error!(service = %record.id, "a loan's details do not read");
            return Err(ApiError::Internal);
        };
        Ok(Self {
            id: record.id,
            status: record.status,
            account_id: record.account_id,
            amount: record.amount,
            reason: record.reason.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            loan,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct LoanPath {
    loan_id: ServiceRecordId,
}

/// Loan `id`, when `customer` took it.
async fn own_loan(state: &AppState, customer: CustomerId, id: ServiceRecordId) -> ApiResult<ServiceRecord> {
    match state.services.service_record(id).await? {
        Some(r) if r.kind == ServiceKind::Loan && r.customer_id == customer => Ok(r),
        _ => Err(ApiError::NotFound("loan")),
    }
}

/// The loans' policy: the connected provider's, or bp-core's default when none is connected
/// (a loan taken while one was can still be read, accepted and repaid).
fn policy(state: &AppState) -> LoanPolicy {
    state.external.as_ref().map_or_else(LoanPolicy::default, |e| e.loan_policy)
}

/// Applies the customer's `input` to loan `id` and answers the loan as it is now.
async fn step(state: &AppState, id: ServiceRecordId, input: LoanInput) -> ApiResult<Json<LoanView>> {
    let applied =
        crate::loans::apply(state.services.as_ref(), state.clock.as_ref(), &policy(state), id, &LoanStep::Input(input))
            .await?;
    match applied {
        LoanApplied::Written(record, _) => {
            state.relay_waker.notify_one();
            Ok(Json(LoanView::of(&record)?))
        }
        LoanApplied::Unchanged(record) => Ok(Json(LoanView::of(&record)?)),
        LoanApplied::Refused(e) => Err(e.into()),
        LoanApplied::NotFound => Err(ApiError::NotFound("loan")),
    }
}

/// `POST /v1/loans`: an application, sent to the loan provider by the worker.
pub(super) async fn apply_for_loan(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewLoanRequest>,
) -> ApiResult<(StatusCode, Json<LoanView>)> {
    if state.external.as_ref().is_none_or(|e| e.loans.is_none()) {
        return Err(ApiError::ExternalUnavailable);
    }
    let customer = auth.0.customer_id;
    let account = state.ledger.store().account(body.account).await?;
    let account = account.filter(|a| a.customer_id() == Some(customer)).ok_or(ApiError::NotFound("account"))?;
    if account.currency != body.amount.currency() {
        return Err(ApiError::AccountUnusable(format!(
            "the account is in {}, the amount in {}",
            account.currency,
            body.amount.currency()
        )));
    }
    let new = NewLoan {
        id: loan::loan_id(customer, &key.0),
        customer,
        account: body.account,
        amount: body.amount,
        term_months: body.term_months,
        purpose: body.purpose,
    };
    // A retry with the same application is replayed by the store (the loan as it is now);
    // another application under the same key is an idempotency conflict.
    let transition = loan::apply(&new, state.now())?;
    let receipt = state.services.request(transition).await?;
    if !receipt.replayed {
        state.relay_waker.notify_one();
        state.external_wake.notify_one();
    }
    Ok((StatusCode::ACCEPTED, Json(LoanView::of(&receipt.record)?)))
}

/// `GET /v1/loans/{loan_id}`: the loan with its schedule.
pub(super) async fn get_loan(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<LoanPath>,
) -> ApiResult<Json<LoanView>> {
    if !auth.0.has_scope("payments") {
        auth.require("accounts")?;
    }
    Ok(Json(LoanView::of(&own_loan(&state, auth.0.customer_id, p.loan_id).await?)?))
}

/// `POST /v1/loans/{loan_id}/accept`: the customer accepts the offer, with a recent sign-in;
/// the principal is paid into the account at once.
pub(super) async fn accept_loan(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<LoanPath>,
) -> ApiResult<Json<LoanView>> {
    own_loan(&state, auth.0.customer_id, p.loan_id).await?;
    let rules = state.payments.sca().rules();
    bp_core::sca::recently_signed_in(rules, auth.0.signed_in_at(), state.now())
        .map_err(|e| ApiError::from(e).in_scheme(auth.0.scheme()))?;
    step(&state, p.loan_id, LoanInput::Accept).await
}

/// `POST /v1/loans/{loan_id}/repayments`: an early repayment of principal, in part (the
/// remaining instalments are recomputed) or in full (the loan closes).
pub(super) async fn repay_loan(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<LoanPath>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewRepayment>,
) -> ApiResult<Json<LoanView>> {
    let customer = auth.0.customer_id;
    own_loan(&state, customer, p.loan_id).await?;
    let input = LoanInput::Repay { id: transfer_id(customer, &key.0), amount: body.amount };
    step(&state, p.loan_id, input).await
}
