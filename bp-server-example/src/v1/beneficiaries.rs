//! Beneficiaries: payees the customer trusts once a challenge is answered, so that payments to
//! them need no further SCA; at most `BENEFICIARIES_MAX` per customer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bp_core::api::{BeneficiaryList, BeneficiaryResponse, BeneficiaryView, ChallengeView, NewBeneficiary, ScaAnswer};
use bp_core::ids::{BeneficiaryId, CustomerId};
use bp_core::security::{
    AuditKind, BENEFICIARIES_MAX, Beneficiary, BeneficiaryState, ChallengePurpose, ChallengeState, ScaChallenge,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::crypto::random_token;
use crate::auth::{Auth, Payer};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;
use crate::v1::check_name;
use crate::v1::sca;
use crate::v1::sca::challenge_id;
use crate::v1::transfers::payee;

pub(super) async fn beneficiaries(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<BeneficiaryList>> {
    auth.require("payments")?;
    let list = state.security.beneficiaries_of(auth.0.customer_id).await?;
    Ok(Json(BeneficiaryList { beneficiaries: list.iter().map(BeneficiaryView::from).collect() }))
}

pub(super) async fn add_beneficiary(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiJson(body): ApiJson<NewBeneficiary>,
) -> ApiResult<(StatusCode, Json<BeneficiaryResponse>)> {
    let customer = auth.0.customer_id;
    let name = check_name(&body.name)?;
    let (number, _) = payee(&state, body.account_number).await?;
    let _guard = state.auth.lock_customer(customer).await;
    let existing = state.security.beneficiaries_of(customer).await?;
    if existing.iter().any(|b| b.account_number == number) {
        return Err(ApiError::Conflict("this account is already a beneficiary".to_owned()));
    }
    if existing.len() >= BENEFICIARIES_MAX {
        return Err(ApiError::Unprocessable("too many beneficiaries; remove some first".to_owned()));
    }
    let now = state.now();
    let beneficiary = Beneficiary {
        id: BeneficiaryId::new_v7(),
        customer_id: customer,
        name,
        account_number: number,
        state: BeneficiaryState::Pending,
        created_at: now,
    };
    let challenge = ScaChallenge {
        id: challenge_id(beneficiary.id.as_uuid()),
        customer_id: customer,
        purpose: ChallengePurpose::Beneficiary { beneficiary_id: beneficiary.id, payee: number },
        nonce: random_token(16),
        created_at: now,
        expires_at: now + state.config.sca.challenge_ttl(),
        failures: 0,
        state: ChallengeState::Open,
    };
    state.security.put_beneficiary(beneficiary.clone()).await?;
    state.security.put_challenge(challenge.clone()).await?;
    let methods = sca::methods(&state, customer, &challenge.purpose).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BeneficiaryResponse {
            beneficiary: BeneficiaryView::from(&beneficiary),
            sca: Some(ChallengeView::of(&challenge, methods)),
        }),
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct BeneficiaryPath {
    beneficiary_id: BeneficiaryId,
}

async fn own_beneficiary(state: &AppState, customer: CustomerId, id: BeneficiaryId) -> ApiResult<Beneficiary> {
    match state.security.beneficiary(id).await? {
        Some(b) if b.customer_id == customer => Ok(b),
        _ => Err(ApiError::NotFound("beneficiary")),
    }
}

pub(super) async fn confirm_beneficiary(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<BeneficiaryPath>,
    ApiJson(answer): ApiJson<ScaAnswer>,
) -> ApiResult<Json<BeneficiaryResponse>> {
    let customer = auth.0.customer_id;
    let mut beneficiary = own_beneficiary(&state, customer, p.beneficiary_id).await?;
    if beneficiary.state == BeneficiaryState::Trusted {
        return Err(ApiError::ChallengeClosed("the beneficiary is already trusted"));
    }
    let challenge = state
        .security
        .challenge(challenge_id(beneficiary.id.as_uuid()))
        .await?
        .filter(|c| c.customer_id == customer)
        .ok_or(ApiError::NotFound("challenge"))?;
    let _guard = state.auth.lock_customer(customer).await;
    sca::answer(&state, &challenge, &answer).await?;
    beneficiary.state = BeneficiaryState::Trusted;
    state.security.put_beneficiary(beneficiary.clone()).await?;
    state
        .auth
        .audit(
            AuditKind::BeneficiaryTrusted,
            Some(customer),
            serde_json::json!({ "beneficiary": beneficiary.id.to_string() }),
        )
        .await?;
    Ok(Json(BeneficiaryResponse { beneficiary: BeneficiaryView::from(&beneficiary), sca: None }))
}

pub(super) async fn delete_beneficiary(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<BeneficiaryPath>,
) -> ApiResult<StatusCode> {
    auth.require("payments")?;
    let customer = auth.0.customer_id;
    if !state.security.delete_beneficiary(customer, p.beneficiary_id).await? {
        return Err(ApiError::NotFound("beneficiary"));
    }
    state
        .auth
        .audit(
            AuditKind::BeneficiaryRemoved,
            Some(customer),
            serde_json::json!({ "beneficiary": p.beneficiary_id.to_string() }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
