//! Payments to other accounts of this bank (FR5), with strong customer authentication: the HTTP
//! face of bp-core's payment flow ([`bp_core::payments::Payments`]), which derives the transfer
//! id from the client's `Idempotency-Key`, decides the SCA exemptions, opens the dynamically
//! linked challenge, confirms, and answers retries. Here: the header, the status codes, and who
//! may see a transfer.

use std::sync::Arc;

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::{Operation, Parameter, ParameterData, ParameterSchemaOrContent, SchemaObject};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bp_core::account::Account;
use bp_core::api::{
    ChallengeView, NewFxQuote, NewInterbankTransfer, NewInternationalTransfer, NewTransfer, ScaAnswer,
    TransferResponse, TransferView,
};
use bp_core::external::fx::FxQuote;
use bp_core::external::{ExternalAccount, PayeeError};
use bp_core::ids::{CustomerId, TransferId};
use bp_core::payments::{IDEMPOTENCY_KEY_LEN_MAX, InternationalRequest, PayReceipt, Payee, Payment, PaymentRequest};
use bp_core::transfer::{Transfer, TransferState};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::{Auth, Payer};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult, IDEMPOTENCY_KEY};
use crate::state::AppState;

/// The `Idempotency-Key` header: the client's unique value for one payment, reused on retries.
#[derive(Debug)]
pub(super) struct IdempotencyKey(pub(super) bp_core::payments::IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get("idempotency-key")
            .ok_or_else(|| ApiError::IdempotencyKeyMissing.at_parameter(IDEMPOTENCY_KEY))?;
        let key = value
            .to_str()
            .map_err(|_| ApiError::bad_parameter(IDEMPOTENCY_KEY, "Idempotency-Key must be printable ASCII"))?;
        Ok(Self(bp_core::payments::IdempotencyKey::parse(key)?))
    }
}

impl OperationInput for IdempotencyKey {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let schema = schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": IDEMPOTENCY_KEY_LEN_MAX,
            "pattern": "^[!-~]+$",
        });
        let _ = ctx;
        operation.parameters.push(aide::openapi::ReferenceOr::Item(Parameter::Header {
            parameter_data: ParameterData {
                name: IDEMPOTENCY_KEY.to_owned(),
                description: Some(
                    "A unique value per payment, reused on every retry of it; a UUIDv7 is best (transfer ids then keep its time order)"
                        .to_owned(),
                ),
                required: true,
                format: ParameterSchemaOrContent::Schema(SchemaObject {
                    json_schema: schema,
                    example: None,
                    external_docs: None,
                }),
                extensions: Default::default(),
                deprecated: None,
                example: None,
                examples: Default::default(),
                explode: None,
            },
            style: Default::default(),
        }));
    }
}

pub(super) async fn create_transfer(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewTransfer>,
) -> ApiResult<(StatusCode, Json<TransferResponse>)> {
    pay(&state, auth.0.customer_id, &key, &PaymentRequest::from(&body)).await
}

/// `POST /v1/interbank-transfers`: a payment to an IBAN, over the rail.
pub(super) async fn create_interbank_transfer(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewInterbankTransfer>,
) -> ApiResult<(StatusCode, Json<TransferResponse>)> {
    let payee = external_payee(&body.to_iban, &body.to_name, body.to_bic.as_deref())?;
    let request = PaymentRequest {
        from_account: body.from_account,
        payee: Payee::External(payee),
        amount: body.amount,
        reference: body.reference.clone(),
    };
    pay(&state, auth.0.customer_id, &key, &request).await
}

/// The payee of a payment to another bank, or the problem naming the member at fault.
fn external_payee(iban: &str, name: &str, bic: Option<&str>) -> ApiResult<ExternalAccount> {
    ExternalAccount::parse(iban, name, bic).map_err(|e| {
        let pointer = match e {
            PayeeError::Iban(_) => Some("/to_iban"),
            PayeeError::Name => Some("/to_name"),
            PayeeError::Bic => Some("/to_bic"),
            _ => None,
        };
        ApiError::Unprocessable(e.to_string()).at_pointer_of(pointer)
    })
}

/// `POST /v1/fx-quotes`: the provider's rate and fee for converting an amount of the customer's
/// account into another currency, every amount computed exactly; nothing is held.
pub(super) async fn create_fx_quote(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiJson(body): ApiJson<NewFxQuote>,
) -> ApiResult<(StatusCode, Json<FxQuote>)> {
    let quote = state
        .payments
        .quote_international(auth.0.customer_id, body.from_account, body.amount, body.target_currency)
        .await?;
    Ok((StatusCode::CREATED, Json(quote)))
}

/// `POST /v1/international-transfers`: a payment abroad at an accepted quote, over the
/// correspondent rail.
pub(super) async fn create_international_transfer(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewInternationalTransfer>,
) -> ApiResult<(StatusCode, Json<TransferResponse>)> {
    let payee = external_payee(&body.to_iban, &body.to_name, body.to_bic.as_deref())?;
    let request =
        InternationalRequest { from_account: body.from_account, quote: body.quote, payee, reference: body.reference };
    let receipt = state.payments.pay_international(auth.0.customer_id, &key.0, &request).await?;
    Ok(answer(receipt))
}

/// Pays `request` under `key` and answers as the façade decided: 201 posted (with its
/// exemption), 202 waiting for SCA (with the challenge), or 202 handed to the rail (with the
/// service record). A retry gets the first attempt's status, with the transfer as it is now.
async fn pay(
    state: &AppState,
    customer: CustomerId,
    key: &IdempotencyKey,
    request: &PaymentRequest,
) -> ApiResult<(StatusCode, Json<TransferResponse>)> {
    let receipt = state.payments.pay(customer, &key.0, request).await?;
    Ok(answer(receipt))
}

/// The status and body of a payment's receipt.
fn answer(receipt: PayReceipt) -> (StatusCode, Json<TransferResponse>) {
    let (status, response) = match receipt.payment {
        Payment::Posted { transfer, exemption } => (
            StatusCode::CREATED,
            TransferResponse {
                transfer: TransferView::from(&transfer),
                sca: None,
                exemption: Some(exemption),
                service: None,
            },
        ),
        Payment::Challenged { transfer, challenge, methods } => (
            StatusCode::ACCEPTED,
            TransferResponse {
                transfer: TransferView::from(&transfer),
                sca: Some(ChallengeView::of(&challenge, methods)),
                exemption: None,
                service: None,
            },
        ),
        Payment::Submitted { transfer, service, exemption } => (
            StatusCode::ACCEPTED,
            TransferResponse {
                transfer: TransferView::from(&transfer),
                sca: None,
                exemption,
                service: Some(service.id),
            },
        ),
    };
    (status, Json(response))
}

pub(super) async fn confirm_transfer(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<TransferPath>,
    ApiJson(answer): ApiJson<ScaAnswer>,
) -> ApiResult<Json<TransferResponse>> {
    let confirmed = state.payments.confirm(auth.0.customer_id, p.transfer_id, &answer).await?;
    Ok(Json(TransferResponse {
        transfer: TransferView::from(&confirmed.transfer),
        sca: Some(ChallengeView::of(&confirmed.challenge, confirmed.methods)),
        exemption: None,
        service: confirmed.service.as_ref().map(|s| s.id),
    }))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct TransferPath {
    transfer_id: TransferId,
}

/// The transfer, when the caller is its payer, or its payee once it is posted (a payment not
/// yet authorized is nobody's business but the payer's).
async fn visible_transfer(state: &AppState, customer: CustomerId, id: TransferId) -> ApiResult<Transfer> {
    let t = state.ledger.store().transfer(id).await?.ok_or(ApiError::NotFound("transfer"))?;
    let owns = |a: Option<Account>| a.is_some_and(|a| a.customer_id() == Some(customer));
    if owns(state.ledger.store().account(t.debit_account).await?)
        || (t.state == TransferState::Posted && owns(state.ledger.store().account(t.credit_account).await?))
    {
        return Ok(t);
    }
    Err(ApiError::NotFound("transfer"))
}

pub(super) async fn get_transfer(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<TransferPath>,
) -> ApiResult<Json<TransferView>> {
    if !auth.0.has_scope("payments") {
        auth.require("accounts")?;
    }
    Ok(Json(TransferView::from(&visible_transfer(&state, auth.0.customer_id, p.transfer_id).await?)))
}
