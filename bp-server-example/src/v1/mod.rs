//! The REST API v1: profile, accounts, history, transfers with SCA, beneficiaries, devices and
//! services. Every handler checks that the ids it is given belong to the caller; another
//! customer's ids get the same 404 as ids that do not exist.

pub mod events;
pub mod sca;

use std::sync::Arc;

use aide::OperationInput;
use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use aide::generate::GenContext;
use aide::openapi::{Operation, Parameter, ParameterData, ParameterSchemaOrContent, SchemaObject};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bp_core::account::Account;
use bp_core::account_number::AccountNumber;
use bp_core::api::{
    AccountList, AccountView, BeneficiaryList, BeneficiaryResponse, BeneficiaryView, ChallengeView, DeviceList,
    DeviceView, Exemption, NewBeneficiary, NewDevice, NewTransfer, PendingTransferList, Profile, ScaAnswer,
    ServiceList, TransactionPage, TransactionView, TransferResponse, TransferView, device_registration_message,
};
use bp_core::ids::{AccountId, BeneficiaryId, ChallengeId, CustomerId, DeviceId, TransferId};
use bp_core::money::Money;
use bp_core::security::{
    AuditKind, BENEFICIARIES_MAX, Beneficiary, BeneficiaryState, ChallengePurpose, ChallengeState, DEVICES_MAX, Device,
    NAME_CHARS_MAX, ScaChallenge,
};
use bp_core::store::{HistoryQuery, PAGE_LEN_MAX};
use bp_core::transfer::{Direction, Transfer, TransferKind, TransferRequest, TransferState};
use bp_core::{LedgerError, Timestamp};
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::crypto::{p256_public_key, p256_verify, random_token, unb64};
use crate::auth::{Auth, Payer};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// Namespace of transfer ids derived from (customer, Idempotency-Key).
const TRANSFER_NAMESPACE: Uuid = Uuid::from_u128(0x3d0c_93c1_5a2e_4b7f_9d61_0f4e_8a27_b5c9);
/// Namespace of challenge ids derived from what they authorize.
const CHALLENGE_NAMESPACE: Uuid = Uuid::from_u128(0x8b5e_0d44_7c19_4e02_a3f6_21d9_6c70_e418);
/// Longest Idempotency-Key.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// The v1 routes.
pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new()
        .api_route("/v1/me", get_with(me, |o| o.tag("profile").summary("The signed-in customer's profile (FR1, FR4)")))
        .api_route(
            "/v1/me/photo",
            get_with(photo, |o| o.tag("profile").summary("The customer's photo").response::<200, Vec<u8>>()),
        )
        .api_route("/v1/accounts", get_with(accounts, |o| o.tag("accounts").summary("The customer's accounts")))
        .api_route("/v1/accounts/{account_id}", get_with(account, |o| o.tag("accounts").summary("One account")))
        .api_route(
            "/v1/accounts/{account_id}/transactions",
            get_with(transactions, |o| o.tag("accounts").summary("An account's history, newest first (FR2)")),
        )
        .api_route(
            "/v1/accounts/{account_id}/pending",
            get_with(pending, |o| {
                o.tag("accounts").summary("An account's pending payments, oldest first").description(
                    "Payments from this account waiting for SCA, holding their amount until confirmed or expired; at most 500. They are not in the history until posted.",
                )
            }),
        )
        .api_route(
            "/v1/transfers",
            post_with(create_transfer, |o| {
                o.tag("transfers")
                    .summary("Pay another account of this bank (FR5)")
                    .description("201: posted without SCA (see `exemption`). 202: pending; answer `sca` at /v1/transfers/{id}/confirm.")
                    .response::<201, Json<TransferResponse>>()
                    .response::<202, Json<TransferResponse>>()
            }),
        )
        .api_route("/v1/transfers/{transfer_id}", get_with(get_transfer, |o| o.tag("transfers").summary("One transfer")))
        .api_route(
            "/v1/transfers/{transfer_id}/confirm",
            post_with(confirm_transfer, |o| o.tag("transfers").summary("Answer a transfer's SCA challenge")),
        )
        .api_route(
            "/v1/beneficiaries",
            get_with(beneficiaries, |o| o.tag("beneficiaries").summary("Trusted payees")).post_with(
                add_beneficiary,
                |o| o.tag("beneficiaries").summary("Add a payee (trusted once its SCA is answered)").response::<202, Json<BeneficiaryResponse>>(),
            ),
        )
        .api_route(
            "/v1/beneficiaries/{beneficiary_id}",
            delete_with(delete_beneficiary, |o| o.tag("beneficiaries").summary("Remove a payee").response::<204, ()>()),
        )
        .api_route(
            "/v1/beneficiaries/{beneficiary_id}/confirm",
            post_with(confirm_beneficiary, |o| o.tag("beneficiaries").summary("Answer a payee's SCA challenge")),
        )
        .api_route(
            "/v1/devices",
            get_with(devices, |o| o.tag("devices").summary("Registered device keys")).post_with(add_device, |o| {
                o.tag("devices").summary("Register a device key (needs a two-factor session)").response::<201, Json<DeviceView>>()
            }),
        )
        .api_route(
            "/v1/devices/{device_id}",
            delete_with(delete_device, |o| o.tag("devices").summary("Remove a device key").response::<204, ()>()),
        )
        .api_route("/v1/services", get_with(services, |o| o.tag("services").summary("External services used (FR3)")))
}

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

/// The challenge id of what it authorizes (a transfer or a beneficiary id).
pub fn challenge_id(of: &Uuid) -> ChallengeId {
    ChallengeId::from_uuid(Uuid::new_v5(&CHALLENGE_NAMESPACE, of.as_bytes()))
}

async fn me(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<Profile>> {
    auth.require("profile")?;
    let customer = state.ledger.customer(auth.0.customer_id).await?;
    let has_photo = state.security.photo(customer.id).await?.is_some();
    Ok(Json(Profile::of(&customer, has_photo)))
}

async fn photo(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Response> {
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

/// The caller's account `id`, or 404.
async fn own_account(state: &AppState, customer: CustomerId, id: AccountId) -> ApiResult<Account> {
    match state.ledger.store().account(id).await? {
        Some(a) if a.customer_id() == Some(customer) => Ok(a),
        _ => Err(ApiError::NotFound("account")),
    }
}

async fn accounts(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<AccountList>> {
    auth.require("accounts")?;
    let mut accounts = state.ledger.accounts_of(auth.0.customer_id).await?;
    // Opening order: the order of the accounts in an event stream's cursor.
    accounts.sort_by_key(|a| (a.opened_at, a.id));
    Ok(Json(AccountList { accounts: accounts.iter().map(AccountView::from).collect() }))
}

#[derive(Debug, Deserialize, JsonSchema)]
struct AccountPath {
    account_id: AccountId,
}

async fn account(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<AccountPath>,
) -> ApiResult<Json<AccountView>> {
    auth.require("accounts")?;
    Ok(Json(AccountView::from(&own_account(&state, auth.0.customer_id, p.account_id).await?)))
}

/// Filters of an account's history.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TransactionQuery {
    /// Only lines posted at or after this time (RFC 3339).
    from: Option<Timestamp>,
    /// Only lines posted before this time (RFC 3339).
    to: Option<Timestamp>,
    /// Only debits or only credits.
    direction: Option<Direction>,
    /// Only lines of this kind.
    kind: Option<TransferKind>,
    /// Only lines of at least this amount (a decimal string in the account's currency).
    #[schemars(regex(pattern = r"^[0-9]{1,15}(\.[0-9]{1,4})?$"))]
    amount_min: Option<String>,
    /// Only lines of at most this amount.
    #[schemars(regex(pattern = r"^[0-9]{1,15}(\.[0-9]{1,4})?$"))]
    amount_max: Option<String>,
    /// The `next_cursor` of the previous page.
    #[schemars(regex(pattern = r"^[0-9]{1,19}$"))]
    cursor: Option<String>,
    /// Page length, 1 to 500 (default 50).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

async fn transactions(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<AccountPath>,
    ApiQuery(q): ApiQuery<TransactionQuery>,
) -> ApiResult<Json<TransactionPage>> {
    auth.require("accounts")?;
    let account = own_account(&state, auth.0.customer_id, p.account_id).await?;
    let amount = |s: &Option<String>, field: &str| -> ApiResult<Option<i64>> {
        s.as_deref()
            .map(|s| {
                Money::parse(s, account.currency)
                    .map(|m| m.amount_minor())
                    .map_err(|e| ApiError::Unprocessable(format!("{field}: {e}")))
            })
            .transpose()
    };
    let before_seq = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            Some(c.parse::<u64>().map_err(|_| ApiError::BadRequest("cursor: not a cursor of this API".to_owned()))?)
        }
    };
    let query = HistoryQuery {
        from: q.from,
        to: q.to,
        direction: q.direction,
        kind: q.kind,
        amount_min_minor: amount(&q.amount_min, "amount_min")?,
        amount_max_minor: amount(&q.amount_max, "amount_max")?,
        before_seq,
        limit: q.limit,
    };
    // An empty range (from ≥ to, or min > max) is a question with an empty answer.
    let empty_dates = matches!((query.from, query.to), (Some(f), Some(t)) if f >= t);
    let empty_amounts = matches!((query.amount_min_minor, query.amount_max_minor), (Some(a), Some(b)) if a > b);
    if empty_dates || empty_amounts {
        return Ok(Json(TransactionPage { items: Vec::new(), next_cursor: None }));
    }
    query.validate().map_err(|e| match e {
        LedgerError::InvalidField { field, reason } => ApiError::BadRequest(format!("{field}: {reason}")),
        other => ApiError::from(other),
    })?;
    let page = state.ledger.history(account.id, &query).await?;
    Ok(Json(TransactionPage {
        items: page.items.iter().map(TransactionView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

async fn pending(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<AccountPath>,
) -> ApiResult<Json<PendingTransferList>> {
    auth.require("accounts")?;
    let account = own_account(&state, auth.0.customer_id, p.account_id).await?;
    // Only the payer's side: the store lists the transfers the account pays, none it receives.
    let transfers = state.ledger.store().pending_of(account.id, PAGE_LEN_MAX).await?;
    Ok(Json(PendingTransferList { transfers: transfers.iter().map(TransferView::from).collect() }))
}

/// The `Idempotency-Key` header: the client's unique value for one payment, reused on retries.
#[derive(Debug)]
struct IdempotencyKey(String);

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
async fn payee(state: &AppState, number: AccountNumber) -> ApiResult<(AccountNumber, Account)> {
    match state.ledger.store().account_by_number(number).await? {
        Some(a) if a.customer_id().is_some() => Ok((number, a)),
        _ => Err(ApiError::Unprocessable("no account of this bank has this number".to_owned())),
    }
}

async fn create_transfer(
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
    let quick = if own || trusted {
        bp_core::sca::exemption(&state.config.sca, own, trusted, &body.amount, &Default::default())
    } else {
        None
    };
    if let Some(exemption) = quick {
        let receipt = submit(&state, request(None), customer, &body, to.id).await?;
        return posted(receipt, exemption);
    }
    let _guard = state.auth.lock_customer(customer).await;
    let mut security = state.security.security_state(customer).await?;
    if bp_core::sca::exemption(&state.config.sca, false, false, &body.amount, &security) == Some(Exemption::LowValue) {
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
struct TransferPath {
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

async fn get_transfer(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<TransferPath>,
) -> ApiResult<Json<TransferView>> {
    if !auth.0.has_scope("payments") {
        auth.require("accounts")?;
    }
    Ok(Json(TransferView::from(&visible_transfer(&state, auth.0.customer_id, p.transfer_id).await?)))
}

async fn confirm_transfer(
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

async fn beneficiaries(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<BeneficiaryList>> {
    auth.require("payments")?;
    let list = state.security.beneficiaries_of(auth.0.customer_id).await?;
    Ok(Json(BeneficiaryList { beneficiaries: list.iter().map(BeneficiaryView::from).collect() }))
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_CHARS_MAX || name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable("name must be 1 to 100 characters, without control characters".into()));
    }
    Ok(name.to_owned())
}

async fn add_beneficiary(
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
struct BeneficiaryPath {
    beneficiary_id: BeneficiaryId,
}

async fn own_beneficiary(state: &AppState, customer: CustomerId, id: BeneficiaryId) -> ApiResult<Beneficiary> {
    match state.security.beneficiary(id).await? {
        Some(b) if b.customer_id == customer => Ok(b),
        _ => Err(ApiError::NotFound("beneficiary")),
    }
}

async fn confirm_beneficiary(
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

async fn delete_beneficiary(
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

async fn devices(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<DeviceList>> {
    let list = state.security.devices_of(auth.0.customer_id).await?;
    Ok(Json(DeviceList { devices: list.iter().filter(|d| d.revoked_at.is_none()).map(DeviceView::from).collect() }))
}

async fn add_device(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiJson(body): ApiJson<NewDevice>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    if !auth.0.fully_authenticated() || auth.0.session.is_none() {
        return Err(ApiError::Forbidden(
            "register devices from a session signed in here with password and second factor",
        ));
    }
    let customer = auth.0.customer_id;
    let name = check_name(&body.name)?;
    let key_bytes = unb64(&body.public_key)
        .filter(|k| k.len() == 65)
        .ok_or_else(|| ApiError::Unprocessable("public_key must be a base64url SEC1 uncompressed P-256 key".into()))?;
    let key = p256_public_key(&key_bytes)
        .ok_or_else(|| ApiError::Unprocessable("public_key is not a point of P-256".into()))?;
    let proof = unb64(&body.proof).ok_or_else(|| ApiError::Unprocessable("proof must be base64url".into()))?;
    let message = device_registration_message(customer, &body.public_key);
    if !p256_verify(&key, message.as_bytes(), &proof) {
        return Err(ApiError::Unprocessable("proof is not the key's signature of the registration message".into()));
    }
    let _guard = state.auth.lock_customer(customer).await;
    let existing = state.security.devices_of(customer).await?;
    let active: Vec<&Device> = existing.iter().filter(|d| d.revoked_at.is_none()).collect();
    if active.iter().any(|d| d.public_key == key_bytes) {
        return Err(ApiError::Conflict("this key is already registered".into()));
    }
    if active.len() >= DEVICES_MAX {
        return Err(ApiError::Unprocessable("too many devices; remove one first".into()));
    }
    let device = Device {
        id: DeviceId::new_v7(),
        customer_id: customer,
        name,
        public_key: key_bytes,
        created_at: state.now(),
        revoked_at: None,
    };
    state.security.add_device(device.clone()).await?;
    state
        .auth
        .audit(AuditKind::DeviceAdded, Some(customer), serde_json::json!({ "device": device.id.to_string() }))
        .await?;
    Ok((StatusCode::CREATED, Json(DeviceView::from(&device))))
}

#[derive(Debug, Deserialize, JsonSchema)]
struct DevicePath {
    device_id: DeviceId,
}

async fn delete_device(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<DevicePath>,
) -> ApiResult<StatusCode> {
    let customer = auth.0.customer_id;
    if !state.security.revoke_device(customer, p.device_id, state.now()).await? {
        return Err(ApiError::NotFound("device"));
    }
    state
        .auth
        .audit(AuditKind::DeviceRemoved, Some(customer), serde_json::json!({ "device": p.device_id.to_string() }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn services(auth: Auth) -> ApiResult<Json<ServiceList>> {
    auth.require("accounts")?;
    // External services (interbank, international, loans) are not connected to this server
    // yet; the list says so instead of pretending the customer has none.
    Ok(Json(ServiceList { services: Vec::new(), external_services_connected: false }))
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
