//! Payments to other accounts of this bank (FR5), with strong customer authentication: the
//! transfer id derived from the client's `Idempotency-Key`, the SCA exemptions (own accounts,
//! trusted beneficiaries, low value), the pending transfer and its dynamically linked challenge,
//! its confirmation, and the answers to retries.
//!
//! This is the payment flow that `bp_core::payments` is to replace; it is kept as it was, in one
//! place, until then.

use std::sync::Arc;

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::{Operation, Parameter, ParameterData, ParameterSchemaOrContent, SchemaObject};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bp_core::account::Account;
use bp_core::account_number::AccountNumber;
use bp_core::api::{ChallengeView, Exemption, NewTransfer, ScaAnswer, TransferResponse, TransferView};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::security::{AuditKind, BeneficiaryState, ChallengePurpose, ChallengeState, ScaChallenge};
use bp_core::transfer::{Transfer, TransferKind, TransferRequest, TransferState};
use bp_core::{LedgerError, Timestamp};
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::crypto::random_token;
use crate::auth::{Auth, Payer};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;
use crate::v1::accounts::own_account;
use crate::v1::sca;
use crate::v1::sca::challenge_id;

/// Namespace of transfer ids derived from (customer, Idempotency-Key).
const TRANSFER_NAMESPACE: Uuid = Uuid::from_u128(0x3d0c_93c1_5a2e_4b7f_9d61_0f4e_8a27_b5c9);
/// Longest Idempotency-Key.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// The transfer id of a customer's Idempotency-Key: the same key of the same customer always
/// gives the same id, and different customers' keys never meet.
///
/// When the key is a UUIDv7 (what clients are advised to use), the id keeps its millisecond
/// timestamp in front (an RFC 9562 version-8 UUID: the key's 48-bit time, then 74 bits of a
/// SHA-1 of namespace, customer and key), so transfer ids are time-ordered and the store appends
/// to its index instead of writing a random page per payment. Any other key gives a
/// name-based (v5) UUID of namespace, customer and key.
pub fn transfer_id(customer: CustomerId, key: &str) -> TransferId {
    let mut name = customer.as_uuid().as_bytes().to_vec();
    name.extend_from_slice(key.as_bytes());
    let named = Uuid::new_v5(&TRANSFER_NAMESPACE, &name);
    match Uuid::parse_str(key) {
        Ok(k) if k.get_version_num() == 7 => {
            let mut bytes = *named.as_bytes();
            bytes[..6].copy_from_slice(&k.as_bytes()[..6]);
            TransferId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
        }
        _ => TransferId::from_uuid(named),
    }
}

/// The `Idempotency-Key` header: the client's unique value for one payment, reused on retries.
#[derive(Debug)]
pub(super) struct IdempotencyKey(String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get("idempotency-key").ok_or(ApiError::IdempotencyKeyMissing)?;
        let key = value.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be printable ASCII".into()))?;
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters".into()));
        }
        Ok(Self(key.to_owned()))
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
                name: "Idempotency-Key".to_owned(),
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

/// The payee's account: a customer account of this bank with that number.
pub(super) async fn payee(state: &AppState, number: AccountNumber) -> ApiResult<(AccountNumber, Account)> {
    match state.ledger.store().account_by_number(number).await? {
        Some(a) if a.customer_id().is_some() => Ok((number, a)),
        _ => Err(ApiError::Unprocessable("no account of this bank has this number".to_owned())),
    }
}

pub(super) async fn create_transfer(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewTransfer>,
) -> ApiResult<(StatusCode, Json<TransferResponse>)> {
    let customer = auth.0.customer_id;
    let id = transfer_id(customer, &key.0);
    let from = own_account(&state, customer, body.from_account).await?;
    let (number, to) = payee(&state, body.to_account_number).await?;
    // No look-up of the id first: the ledger itself answers a retry as a replay (same request)
    // or a conflict (another request, or the same one decided otherwise), see `submit`.
    let own = to.customer_id() == Some(customer);
    let trusted = !own
        && state
            .security
            .beneficiaries_of(customer)
            .await?
            .iter()
            .any(|b| b.account_number == number && b.state == BeneficiaryState::Trusted);
    let request = |hold_until| TransferRequest {
        id,
        kind: TransferKind::Internal,
        debit_account: from.id,
        credit_account: to.id,
        amount: body.amount,
        reference: body.reference.clone(),
        hold_until,
    };
    // Own accounts and trusted payees need no security state; low value reads and counts it
    // under the customer's lock.
    let relation = if own {
        bp_core::sca::PayeeRelation::OwnAccount
    } else if trusted {
        bp_core::sca::PayeeRelation::TrustedBeneficiary
    } else {
        bp_core::sca::PayeeRelation::Other
    };
    let quick = if own || trusted { bp_core::sca::standing_exemption(&state.config.sca, relation) } else { None };
    if let Some(exemption) = quick {
        let receipt = submit(&state, request(None), customer, &body, to.id).await?;
        return posted(receipt, exemption);
    }
    let _guard = state.auth.lock_customer(customer).await;
    let mut security = state.security.security_state(customer).await?;
    if bp_core::sca::low_value_allows(&state.config.sca, &body.amount, &security) {
        let receipt = submit(&state, request(None), customer, &body, to.id).await?;
        if let Submitted::New(t) = &receipt
            && t.state == TransferState::Posted
        {
            bp_core::sca::count_low_value(&mut security, &body.amount);
            state.security.put_security_state(customer, security).await?;
            state
                .auth
                .audit(
                    AuditKind::ScaExempted,
                    Some(customer),
                    serde_json::json!({ "rule": "low_value", "transfer": id.to_string() }),
                )
                .await?;
        }
        return posted(receipt, Exemption::LowValue);
    }
    let now = state.now();
    let expires_at = now + state.config.sca.challenge_ttl();
    let transfer = match submit(&state, request(Some(expires_at)), customer, &body, to.id).await? {
        Submitted::New(t) => t,
        Submitted::Replay(response) => return Ok(response),
    };
    let challenge = payment_challenge(customer, &transfer, number, now);
    state.security.put_challenge(challenge.clone()).await?;
    metrics::counter!("bp_transfers_total", "outcome" => "sca_required").increment(1);
    let methods = sca::methods(&state, customer, &challenge.purpose).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TransferResponse {
            transfer: TransferView::from(&transfer),
            sca: Some(ChallengeView::of(&challenge, methods)),
            exemption: None,
        }),
    ))
}

fn payment_challenge(customer: CustomerId, transfer: &Transfer, payee: AccountNumber, now: Timestamp) -> ScaChallenge {
    ScaChallenge {
        id: challenge_id(transfer.id.as_uuid()),
        customer_id: customer,
        purpose: ChallengePurpose::Payment { transfer_id: transfer.id, amount: transfer.amount, payee },
        nonce: random_token(16),
        created_at: now,
        expires_at: transfer.hold_until.unwrap_or(now),
        failures: 0,
        state: ChallengeState::Open,
    }
}

enum Submitted {
    New(Transfer),
    Replay((StatusCode, Json<TransferResponse>)),
}

/// Submits to the ledger; a concurrent retry of the same key that got there first is answered
/// as a replay.
async fn submit(
    state: &AppState,
    request: TransferRequest,
    customer: CustomerId,
    body: &NewTransfer,
    payee: AccountId,
) -> ApiResult<Submitted> {
    let id = request.id;
    match state.ledger.transfer(request).await {
        Ok(receipt) if receipt.replayed => {
            let existing = state.ledger.transfer_by_id(id).await?;
            replay(state, customer, &existing, body, payee).await.map(Submitted::Replay)
        }
        Ok(receipt) => {
            state.relay_waker.notify_one();
            if receipt.transfer.state == TransferState::Posted {
                metrics::counter!("bp_transfers_total", "outcome" => "posted").increment(1);
            }
            Ok(Submitted::New(receipt.transfer))
        }
        Err(bp_core::Error::Ledger(LedgerError::IdempotencyConflict { .. })) => {
            let existing = state.ledger.transfer_by_id(id).await?;
            replay(state, customer, &existing, body, payee).await.map(Submitted::Replay)
        }
        Err(e) => {
            metrics::counter!("bp_transfers_total", "outcome" => "rejected").increment(1);
            Err(e.into())
        }
    }
}

fn posted(receipt: Submitted, exemption: Exemption) -> ApiResult<(StatusCode, Json<TransferResponse>)> {
    match receipt {
        Submitted::New(t) => Ok((
            StatusCode::CREATED,
            Json(TransferResponse { transfer: TransferView::from(&t), sca: None, exemption: Some(exemption) }),
        )),
        Submitted::Replay(response) => Ok(response),
    }
}

/// The answer to a retry: the same status as the first answer, with the transfer as it is now.
async fn replay(
    state: &AppState,
    customer: CustomerId,
    existing: &Transfer,
    body: &NewTransfer,
    payee: AccountId,
) -> ApiResult<(StatusCode, Json<TransferResponse>)> {
    let same = existing.kind == TransferKind::Internal
        && existing.debit_account == body.from_account
        && existing.credit_account == payee
        && existing.amount == body.amount
        && existing.reference == body.reference;
    if !same {
        return Err(ApiError::IdempotencyConflict);
    }
    let challenge = state.security.challenge(challenge_id(existing.id.as_uuid())).await?;
    let challenge = match challenge {
        Some(c) => Some(c),
        // A crash between the pending transfer and its challenge: make the challenge now.
        None if existing.state == TransferState::Pending => {
            let payee_number = state.ledger.account(existing.credit_account).await?.number;
            let c = payment_challenge(customer, existing, payee_number, state.now());
            state.security.put_challenge(c.clone()).await?;
            Some(c)
        }
        None => None,
    };
    match challenge {
        Some(c) => {
            let methods = sca::methods(state, customer, &c.purpose).await?;
            Ok((
                StatusCode::ACCEPTED,
                Json(TransferResponse {
                    transfer: TransferView::from(existing),
                    sca: Some(ChallengeView::of(&c, methods)),
                    exemption: None,
                }),
            ))
        }
        None => {
            let payee_account = state.ledger.account(payee).await?;
            let exemption = if payee_account.customer_id() == Some(customer) {
                Exemption::OwnAccounts
            } else if state
                .security
                .beneficiaries_of(customer)
                .await?
                .iter()
                .any(|b| b.account_number == payee_account.number && b.state == BeneficiaryState::Trusted)
            {
                Exemption::TrustedBeneficiary
            } else {
                Exemption::LowValue
            };
            Ok((
                StatusCode::CREATED,
                Json(TransferResponse {
                    transfer: TransferView::from(existing),
                    sca: None,
                    exemption: Some(exemption),
                }),
            ))
        }
    }
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

pub(super) async fn confirm_transfer(
    State(state): State<Arc<AppState>>,
    Payer(auth): Payer,
    ApiPath(p): ApiPath<TransferPath>,
    ApiJson(answer): ApiJson<ScaAnswer>,
) -> ApiResult<Json<TransferResponse>> {
    let customer = auth.0.customer_id;
    let transfer = state.ledger.store().transfer(p.transfer_id).await?.ok_or(ApiError::NotFound("transfer"))?;
    let payer = state.ledger.account(transfer.debit_account).await?;
    if payer.customer_id() != Some(customer) {
        return Err(ApiError::NotFound("transfer"));
    }
    let challenge = state
        .security
        .challenge(challenge_id(transfer.id.as_uuid()))
        .await?
        .filter(|c| c.customer_id == customer)
        .ok_or(ApiError::NotFound("challenge"))?;
    // Dynamic linking, checked again: the challenge names exactly this transfer's amount and payee.
    let payee_number = state.ledger.account(transfer.credit_account).await?.number;
    let linked = matches!(&challenge.purpose,
        ChallengePurpose::Payment { transfer_id, amount, payee }
            if *transfer_id == transfer.id && *amount == transfer.amount && *payee == payee_number);
    if !linked {
        return Err(ApiError::Conflict("the challenge does not match this transfer".to_owned()));
    }
    let _guard = state.auth.lock_customer(customer).await;
    match transfer.state {
        TransferState::Pending => {}
        TransferState::Posted => return Err(ApiError::ChallengeClosed("the transfer was already confirmed")),
        _ => return Err(ApiError::ChallengeClosed("the transfer expired or was cancelled")),
    }
    let answered = match sca::answer(&state, &challenge, &answer).await {
        Ok(c) => c,
        // Answered before, but the transfer is still pending (the server stopped in between):
        // the customer did authorize it, so post it now.
        Err(ApiError::ChallengeClosed(_)) if matches!(challenge.state, ChallengeState::Answered { .. }) => challenge,
        Err(e) => return Err(e),
    };
    let receipt = state.ledger.post_pending(transfer.id).await?;
    state.relay_waker.notify_one();
    metrics::counter!("bp_transfers_total", "outcome" => "posted").increment(1);
    let methods = sca::methods(&state, customer, &answered.purpose).await?;
    Ok(Json(TransferResponse {
        transfer: TransferView::from(&receipt.transfer),
        sca: Some(ChallengeView::of(&answered, methods)),
        exemption: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids_are_per_customer_and_time_ordered_for_uuid7_keys() {
        let (a, b) = (CustomerId::new_v7(), CustomerId::new_v7());
        assert_eq!(transfer_id(a, "k-1"), transfer_id(a, "k-1"));
        assert_ne!(transfer_id(a, "k-1"), transfer_id(b, "k-1"));
        assert_eq!(transfer_id(a, "k-1").as_uuid().get_version_num(), 5);
        let earlier = Uuid::now_v7().to_string();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = Uuid::now_v7().to_string();
        let (x, y) = (transfer_id(a, &earlier), transfer_id(a, &later));
        assert_eq!(x.as_uuid().get_version_num(), 8);
        assert_eq!(x, transfer_id(a, &earlier), "deterministic");
        assert_ne!(x, transfer_id(b, &earlier), "per customer");
        assert!(x < y, "time-ordered");
    }
}
