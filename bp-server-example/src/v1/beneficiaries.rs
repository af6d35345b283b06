//! Beneficiaries: payees the customer trusts once a challenge is answered, so that payments to
//! them need no further SCA. The HTTP face of bp-core's [`bp_core::payments::Payments`], which
//! keeps the rules (names, the bound on beneficiaries, the challenge, the audit).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::api::{BeneficiaryList, BeneficiaryResponse, BeneficiaryView, ChallengeView, NewBeneficiary, ScaAnswer};
use bp_core::ids::BeneficiaryId;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::{Auth, Payer};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::ApiResult;
use crate::state::AppState;

pub(super) async fn beneficiaries(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<BeneficiaryList>> {
    auth.require("payments")?;
    let list = state.payments.beneficiaries(auth.0.customer_id).await?;
    Ok(Json(BeneficiaryList { beneficiaries: list.iter().map(BeneficiaryView::from).collect() }))
}

pub(super) async fn add_beneficiary(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiJson(body): ApiJson<NewBeneficiary>,
) -> ApiResult<(StatusCode, Json<BeneficiaryResponse>)> {
    let added = state.payments.add_beneficiary(auth.0.customer_id, &body.name, body.account_number).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BeneficiaryResponse {
            beneficiary: BeneficiaryView::from(&added.beneficiary),
            sca: Some(ChallengeView::of(&added.challenge, added.methods)),
        }),
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct BeneficiaryPath {
    beneficiary_id: BeneficiaryId,
}

pub(super) async fn confirm_beneficiary(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<BeneficiaryPath>,
    ApiJson(answer): ApiJson<ScaAnswer>,
) -> ApiResult<Json<BeneficiaryResponse>> {
    let trusted = state.payments.confirm_beneficiary(auth.0.customer_id, p.beneficiary_id, &answer).await?;
    Ok(Json(BeneficiaryResponse { beneficiary: BeneficiaryView::from(&trusted), sca: None }))
}

pub(super) async fn delete_beneficiary(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<BeneficiaryPath>,
) -> ApiResult<StatusCode> {
    auth.require("payments")?;
    state.payments.remove_beneficiary(auth.0.customer_id, p.beneficiary_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
