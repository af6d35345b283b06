//! Loans (FR6): applying for one, reading it with its schedule, accepting its offer and repaying
//! it early. The HTTP face of bp-core's `external::loan` state machine, applied by `loans`; the
//! worker (`jobs`) sends the application to the loan provider and collects the instalments.
//! A loan is its customer's only: another customer's id gets the same 404 as an unknown one.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::api::{ChallengeView, LoanAcceptance, LoanView, NewLoanRequest, NewRepayment, ScaAnswer};
use bp_core::external::loan::{self, LoanInput, LoanPolicy, NewLoan};
use bp_core::ids::{CustomerId, ServiceRecordId};
use bp_core::payments::transfer_id;
use bp_core::service_record::{ServiceKind, ServiceRecord};
use schemars::JsonSchema;
use serde::Deserialize;

use super::transfers::IdempotencyKey;
use crate::auth::{Auth, Payer};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::loans::{LoanApplied, LoanStep};
use crate::state::AppState;

/// The view of loan `record`.
fn view(record: &ServiceRecord) -> ApiResult<LoanView> {
    LoanView::of(record).ok_or_else(|| {
        tracing::error!(service = %record.id, "a loan's details do not read");
        ApiError::Internal
    })
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
            Ok(Json(view(&record)?))
        }
        LoanApplied::Unchanged(record) => Ok(Json(view(&record)?)),
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
        ))
        .at_pointer("/amount/currency"));
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
    Ok((StatusCode::ACCEPTED, Json(view(&receipt.record)?)))
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
    Ok(Json(view(&own_loan(&state, auth.0.customer_id, p.loan_id).await?)?))
}

/// `POST /v1/loans/{loan_id}/accept`: the customer asks to accept the offer; the answer is the
/// challenge whose `bp-sca-v4` text shows the offer. Nothing moves until it is answered.
pub(super) async fn accept_loan(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<LoanPath>,
) -> ApiResult<(StatusCode, Json<LoanAcceptance>)> {
    let loan = own_loan(&state, auth.0.customer_id, p.loan_id).await?;
    let opened = state.payments.challenge_loan_offer(auth.0.customer_id, &loan).await?;
    let sca = ChallengeView::of(&opened.challenge, opened.methods);
    Ok((StatusCode::ACCEPTED, Json(LoanAcceptance { loan: view(&loan)?, sca })))
}

/// `POST /v1/loans/{loan_id}/accept/confirm`: the answer to the offer's challenge; once it is
/// right, the loan is accepted: the receivable opened, the principal paid in, the fee taken,
/// the schedule set. Confirming an accepted loan again answers it as it is.
pub(super) async fn confirm_loan(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<LoanPath>,
    ApiJson(answer): ApiJson<ScaAnswer>,
) -> ApiResult<Json<LoanView>> {
    let loan = own_loan(&state, auth.0.customer_id, p.loan_id).await?;
    state.payments.confirm_loan_offer(auth.0.customer_id, &loan, &answer).await?;
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
