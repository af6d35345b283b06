//! The JSON wire types of the v1 HTTP API: requests, responses and problems. The reference
//! server and the client SDK both use these, so they cannot drift. Amounts travel as decimal
//! strings inside [`Money`]; requests reject unknown fields, so a misspelt field of a payment is
//! an error rather than silently ignored.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::account::{Account, AccountKind, AccountStatus, Balances};
use crate::account_number::AccountNumber;
use crate::customer::{BiometricEnrolment, Contact, Customer, DocumentKind, KycStatus, Party};
use crate::external::ReasonCode;
use crate::external::loan::LoanDetails;
use crate::ids::{AccountId, BeneficiaryId, ChallengeId, CustomerId, DeviceId, PasskeyId, ServiceRecordId, TransferId};
use crate::money::{Currency, Money};
pub use crate::sca::{Exemption, ScaAnswer, device_registration_message, signing_message};
use crate::security::{Beneficiary, BeneficiaryState, Device, Passkey, ScaChallenge, ScaMethod};
use crate::service_record::{ServiceRecord, ServiceStatus};
use crate::transfer::{Direction, Posting, Transfer, TransferKind, TransferState, VoidReason};

/// An RFC 9457 problem: what went wrong, in words a customer or a support desk can act on.
/// `type` is a stable URI per kind of problem; nothing internal is ever in it.
///
/// When the server knows which part of the request is at fault, `errors` names it (the
/// extension member of RFC 9457 §3): each entry has a `detail` and either a `pointer`, an RFC
/// 6901 JSON Pointer into the request body (`/amount`, `/contact/email`), or a `parameter`, the
/// name of a query parameter or header as the OpenAPI document spells it (`limit`,
/// `Idempotency-Key`):
///
/// ```json
/// { "type": "urn:bp:problem:invalid-request", "title": "Invalid request", "status": 422,
///   "detail": "the amount must be positive",
///   "errors": [{ "pointer": "/amount", "detail": "the amount must be positive" }] }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id, for support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The parts of the request at fault, when the server knows them (absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemError>,
}

/// One part of a request at fault, in a [`Problem`]'s `errors`: exactly one of `pointer` (a
/// member of the JSON body) and `parameter` (a query parameter or a header) is present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProblemError {
    /// An RFC 6901 JSON Pointer to the member of the request body at fault (`/amount`,
    /// `/contact/email`, `/documents/0/number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// The query parameter (`limit`) or header (`Idempotency-Key`) at fault, named as in the
    /// OpenAPI document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// What is wrong with it.
    pub detail: String,
}

impl ProblemError {
    /// The body member at `pointer` (an RFC 6901 JSON Pointer, `/amount`).
    pub fn at_pointer(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { pointer: Some(pointer.into()), parameter: None, detail: detail.into() }
    }

    /// The query parameter or header `name`.
    pub fn at_parameter(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { pointer: None, parameter: Some(name.into()), detail: detail.into() }
    }

    /// The name of what is at fault: the pointer without its leading `/` (`amount`,
    /// `contact/email`), or the parameter.
    pub fn member(&self) -> Option<&str> {
        match (&self.pointer, &self.parameter) {
            (Some(pointer), _) => Some(pointer.strip_prefix('/').unwrap_or(pointer)),
            (None, Some(parameter)) => Some(parameter),
            (None, None) => None,
        }
    }
}

/// The RFC 6901 JSON Pointer of the member reached through `keys` (`["contact", "email"]` →
/// `/contact/email`), with `~` and `/` inside a key escaped.
pub fn json_pointer<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    keys.into_iter().fold(String::new(), |mut pointer, key| {
        pointer.push('/');
        pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
        pointer
    })
}

/// The signed-in customer's profile (FR1, FR4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Profile {
    /// Customer id.
    pub id: CustomerId,
    /// Login name.
    pub username: String,
    /// Name to show: the person's full name or the company's legal name.
    pub display_name: String,
    /// Person or legal entity, with the fields of each.
    pub party: Party,
    /// Identity documents.
    pub documents: Vec<DocumentView>,
    /// Contact data.
    pub contact: Contact,
    /// Where to fetch the photo (`/v1/me/photo`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
    /// Biometric enrolment of a device (never biometric data).
    pub biometric: BiometricEnrolment,
    /// KYC status.
    pub kyc: KycStatus,
    /// Extra fields of the customer record.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Profile {
    /// The profile of `customer`; `has_photo` says whether a photo is stored.
    pub fn of(customer: &Customer, has_photo: bool) -> Self {
        Self {
            id: customer.id,
            username: customer.username.as_str().to_owned(),
            display_name: customer.display_name(),
            party: customer.party.clone(),
            documents: customer
                .documents
                .iter()
                .map(|d| DocumentView {
                    kind: d.kind,
                    number: d.number.clone(),
                    number_masked: d.masked_number(),
                    issuing_country: d.issuing_country.clone(),
                    expires_on: d.expires_on,
                })
                .collect(),
            contact: customer.contact.clone(),
            photo_url: has_photo.then(|| "/v1/me/photo".to_owned()),
            biometric: customer.biometric.clone(),
            kyc: customer.kyc,
            extra: customer.extra.clone(),
        }
    }
}

/// An identity document as the API shows it to its owner: the full number for the mobile
/// profile (FR4) and a masked one for screens that must not show it whole.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentView {
    /// Kind.
    pub kind: DocumentKind,
    /// The number.
    pub number: String,
    /// The number with all but its last four characters masked.
    pub number_masked: String,
    /// ISO 3166-1 alpha-2 issuing country.
    pub issuing_country: String,
    /// Expiry date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<NaiveDate>,
}

impl std::fmt::Debug for DocumentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentView").field("kind", &self.kind).field("number", &"<redacted>").finish()
    }
}

/// An account of the signed-in customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AccountView {
    /// Id.
    pub id: AccountId,
    /// Account number (12 digits, check digits included).
    pub number: String,
    /// Currency.
    pub currency: Currency,
    /// Kind.
    pub kind: AccountKind,
    /// Status.
    pub status: AccountStatus,
    /// Balances.
    pub balances: Balances,
    /// Overdraft limit.
    pub overdraft_limit: Money,
    /// The sequence number of the account's latest event (matches the event stream).
    pub last_event_seq: u64,
    /// When it was opened.
    pub opened_at: Timestamp,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id,
            number: a.number.to_string(),
            currency: a.currency,
            kind: a.kind,
            status: a.status,
            balances: a.balances(),
            overdraft_limit: Money::new(a.overdraft_limit_minor, a.currency),
            last_event_seq: a.last_event_seq,
            opened_at: a.opened_at,
        }
    }
}

/// The signed-in customer's accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AccountList {
    /// Oldest first.
    pub accounts: Vec<AccountView>,
}

/// One line of an account's history (FR2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransactionView {
    /// The account's event sequence number of this line.
    pub seq: u64,
    /// The transfer.
    pub transfer_id: TransferId,
    /// Kind of transfer.
    pub kind: TransferKind,
    /// Debit (money left) or credit (money entered).
    pub direction: Direction,
    /// Amount, positive.
    pub amount: Money,
    /// Posted balance after this line.
    pub balance_after: Money,
    /// The other account.
    pub counterparty_account_id: AccountId,
    /// The transfer's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// When it was posted.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub posted_at: Timestamp,
}

impl From<&Posting> for TransactionView {
    fn from(p: &Posting) -> Self {
        Self {
            seq: p.seq,
            transfer_id: p.transfer_id,
            kind: p.kind,
            direction: p.direction,
            amount: p.amount,
            balance_after: p.balance_after,
            counterparty_account_id: p.counterparty,
            reference: p.reference.clone(),
            posted_at: p.posted_at,
        }
    }
}

/// A page of an account's history, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransactionPage {
    /// The lines.
    pub items: Vec<TransactionView>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A payment to another account of this bank (FR5). The transfer's id is derived from the
/// caller's `Idempotency-Key` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTransfer {
    /// The customer's account the money leaves.
    pub from_account: AccountId,
    /// The payee's account number.
    pub to_account_number: AccountNumber,
    /// Amount and currency (the currency of both accounts).
    pub amount: Money,
    /// Free text shown to both sides (at most 140 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 140))]
    pub reference: Option<String>,
}

/// A payment to an account at another bank (a SEPA credit transfer: EUR only), sent over the
/// bank's payment rail. Its funds are held until the rail settles or rejects it; follow it at
/// `GET /v1/services`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInterbankTransfer {
    /// The customer's account the money leaves.
    pub from_account: AccountId,
    /// The payee's IBAN (spaces allowed, letters in any case).
    #[schemars(length(min = 15, max = 42))]
    pub to_iban: String,
    /// The payee's name, as their bank knows it (1 to 70 characters).
    #[schemars(length(min = 1, max = 70))]
    pub to_name: String,
    /// The payee's bank's BIC (8 or 11 characters), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 11))]
    pub to_bic: Option<String>,
    /// Amount (EUR).
    pub amount: Money,
    /// Remittance information for the payee (at most 140 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 140))]
    pub reference: Option<String>,
}

/// A request for a currency conversion quote: converting `amount` (in the account's currency)
/// into `target_currency`, for a payment abroad. Nothing is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFxQuote {
    /// The customer's account the money would leave.
    pub from_account: AccountId,
    /// The amount to convert, in the account's currency (the fee comes on top).
    pub amount: Money,
    /// The payee's currency (ISO 4217).
    pub target_currency: Currency,
}

/// A payment abroad at an accepted quote: the quote exactly as `POST /v1/fx-quotes` gave it,
/// before its `expires_at`. It always takes SCA; its challenge names both amounts, the fee and
/// the rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInternationalTransfer {
    /// The customer's account the money leaves (the quote's source currency).
    pub from_account: AccountId,
    /// The quote accepted, unchanged.
    pub quote: crate::external::fx::FxQuote,
    /// The payee's IBAN (spaces allowed, letters in any case).
    #[schemars(length(min = 15, max = 42))]
    pub to_iban: String,
    /// The payee's name, as their bank knows it (1 to 70 characters).
    #[schemars(length(min = 1, max = 70))]
    pub to_name: String,
    /// The payee's bank's BIC (8 or 11 characters), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 11))]
    pub to_bic: Option<String>,
    /// Remittance information for the payee (at most 140 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 140))]
    pub reference: Option<String>,
}

/// A transfer as its payer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransferView {
    /// Id.
    pub id: TransferId,
    /// Kind.
    pub kind: TransferKind,
    /// State: `pending` while waiting for SCA, then `posted`, or `voided` when it expired.
    pub state: TransferState,
    /// The account the money leaves.
    pub from_account: AccountId,
    /// The account the money enters.
    pub to_account: AccountId,
    /// Amount.
    pub amount: Money,
    /// Reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Why it was voided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void_reason: Option<VoidReason>,
    /// When it was accepted.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: Timestamp,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "crate::rfc3339::serialize_option")]
    pub finished_at: Option<Timestamp>,
}

impl From<&Transfer> for TransferView {
    fn from(t: &Transfer) -> Self {
        Self {
            id: t.id,
            kind: t.kind,
            state: t.state,
            from_account: t.debit_account,
            to_account: t.credit_account,
            amount: t.amount,
            reference: t.reference.clone(),
            void_reason: t.void_reason,
            created_at: t.created_at,
            finished_at: t.finished_at,
        }
    }
}

/// An account's pending transfers, which it pays: payments waiting for SCA, holding their amount
/// on the account until they are confirmed (posted) or their hold ends (voided). Only the payer
/// lists them; the payee sees a transfer once it is posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingTransferList {
    /// Oldest first, at most 500.
    pub transfers: Vec<TransferView>,
}

/// An SCA challenge to answer: sign `message` with a registered device key (ECDSA P-256,
/// SHA-256), or, where `methods` allows it, enter a TOTP code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChallengeView {
    /// Id.
    pub id: ChallengeId,
    /// The exact text to sign (UTF-8); it names amount, currency, payee and transfer.
    pub message: String,
    /// Accepted ways to answer.
    pub methods: Vec<ScaMethod>,
    /// Unanswerable after.
    pub expires_at: Timestamp,
}

impl ChallengeView {
    /// The view of `challenge`, answerable by `methods`.
    pub fn of(challenge: &ScaChallenge, methods: Vec<ScaMethod>) -> Self {
        Self { id: challenge.id, message: signing_message(challenge), methods, expires_at: challenge.expires_at }
    }
}

/// The answer to a transfer's creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransferResponse {
    /// The transfer.
    pub transfer: TransferView,
    /// Present when the transfer waits for SCA: answer it at `/v1/transfers/{id}/confirm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sca: Option<ChallengeView>,
    /// Present when the transfer was posted without SCA: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemption: Option<Exemption>,
    /// Present for a payment to another bank once it is handed to the rail: its service record,
    /// followed at `GET /v1/services` (its status changes arrive as `service.updated` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRecordId>,
}

/// A device key to register: registered once the challenge of the answer is answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// The customer's name for the device.
    #[schemars(
        length(min = 1, max = 100),
        regex(
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// The ECDSA P-256 public key, SEC1 uncompressed (65 bytes), base64url without padding.
    #[schemars(length(min = 87, max = 87), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub public_key: String,
    /// Proof of possession: the key's signature of [`device_registration_message`] for this
    /// customer and key, base64url without padding (DER or 64-byte r‖s).
    #[schemars(length(min = 86, max = 96), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub proof: String,
}

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceView {
    /// Id.
    pub id: DeviceId,
    /// Name.
    pub name: String,
    /// When it was registered.
    pub created_at: Timestamp,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        Self { id: d.id, name: d.name.clone(), created_at: d.created_at }
    }
}

/// The answer to registering a device: it is registered once `sca` is answered at
/// `/v1/devices/{id}/confirm` (by a device the customer has, or for a first device by a TOTP
/// code).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceResponse {
    /// The device (its id and name; registered only once the challenge is answered).
    pub device: DeviceView,
    /// The challenge to answer; absent once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sca: Option<ChallengeView>,
}

/// The customer's registered devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceList {
    /// Oldest first; removed devices are not listed.
    pub devices: Vec<DeviceView>,
}

/// A passkey to register: `POST /v1/passkeys` answers the WebAuthn options to create it with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPasskey {
    /// The customer's name for the passkey ("MacBook Touch ID").
    #[schemars(
        length(min = 1, max = 100),
        regex(
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
}

/// A registered passkey. Its credential (public key, counter) stays on the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PasskeyView {
    /// Id.
    pub id: PasskeyId,
    /// Name.
    pub name: String,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last signed the customer in.
    pub last_used_at: Option<Timestamp>,
}

impl From<&Passkey> for PasskeyView {
    fn from(p: &Passkey) -> Self {
        Self { id: p.id, name: p.name.clone(), created_at: p.created_at, last_used_at: p.last_used_at }
    }
}

/// The customer's passkeys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PasskeyList {
    /// Oldest first.
    pub passkeys: Vec<PasskeyView>,
}

/// A passkey registration begun: create the credential with `options` (the browser's
/// `navigator.credentials.create`, its binary members base64url) and send it to
/// `/v1/passkeys/{id}/confirm`, once, before the options expire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PasskeyRegistration {
    /// The id the passkey will have.
    pub id: PasskeyId,
    /// Its name.
    pub name: String,
    /// When the options expire.
    pub expires_at: Timestamp,
    /// WebAuthn `CredentialCreationOptions` (`{"publicKey": …}`): user verification required,
    /// a discoverable credential required, the customer's passkeys excluded.
    pub options: serde_json::Value,
}

/// The credential the authenticator made, as the browser gives it (a WebAuthn
/// `RegistrationResponseJSON`: `id`, `rawId`, `type`, `response.clientDataJSON`,
/// `response.attestationObject`, binary members base64url).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PasskeyCredential(pub serde_json::Value);

/// A payee to trust (adding one requires SCA).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBeneficiary {
    /// The customer's name for the payee.
    #[schemars(
        length(min = 1, max = 100),
        regex(
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// The payee's account number.
    pub account_number: AccountNumber,
}

/// A beneficiary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BeneficiaryView {
    /// Id.
    pub id: BeneficiaryId,
    /// Name.
    pub name: String,
    /// The payee's account number.
    pub account_number: String,
    /// `pending` until its SCA is answered, then `trusted`.
    pub state: BeneficiaryState,
    /// When it was added.
    pub created_at: Timestamp,
}

impl From<&Beneficiary> for BeneficiaryView {
    fn from(b: &Beneficiary) -> Self {
        Self {
            id: b.id,
            name: b.name.clone(),
            account_number: b.account_number.to_string(),
            state: b.state,
            created_at: b.created_at,
        }
    }
}

/// The answer to adding a beneficiary: it stays pending until `sca` is answered at
/// `/v1/beneficiaries/{id}/confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BeneficiaryResponse {
    /// The beneficiary.
    pub beneficiary: BeneficiaryView,
    /// The challenge to answer; absent once trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sca: Option<ChallengeView>,
}

/// The customer's beneficiaries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BeneficiaryList {
    /// Oldest first.
    pub beneficiaries: Vec<BeneficiaryView>,
}

/// The customer's use of external services (FR3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceList {
    /// Newest first.
    pub services: Vec<ServiceRecord>,
    /// Whether external services are connected to this server. While they are not, the list
    /// is empty for everyone, and clients should say so rather than show it as the customer's
    /// history.
    pub external_services_connected: bool,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An application for a loan (FR6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLoanRequest {
    /// The customer's account the loan is paid into and repaid from.
    pub account: AccountId,
    /// The principal asked for, in the account's currency.
    pub amount: Money,
    /// The term asked for, in monthly instalments.
    pub term_months: u32,
    /// What the loan is for (1 to 140 characters, no control characters).
    pub purpose: String,
}

/// An early repayment of a loan's principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRepayment {
    /// The principal repaid, in the loan's currency: at most the outstanding principal (all of
    /// it closes the loan).
    pub amount: Money,
}

/// A loan as its customer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoanView {
    /// The loan's id (its service record's).
    pub id: ServiceRecordId,
    /// Where it is: requested, submitted, unknown (being decided), offered, rejected, active,
    /// in_arrears, closed.
    pub status: ServiceStatus,
    /// The account it is paid into and repaid from.
    pub account_id: AccountId,
    /// The principal.
    pub amount: Money,
    /// The provider's reason code, when declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    /// When the customer applied.
    pub created_at: Timestamp,
    /// Its last change.
    pub updated_at: Timestamp,
    /// The decision, the offer, the schedule with paid and due instalments, the outstanding
    /// principal, arrears and early repayments.
    pub loan: LoanDetails,
}

impl LoanView {
    /// The view of loan `record`; `None` when it is not a loan's or its details do not read.
    pub fn of(record: &ServiceRecord) -> Option<Self> {
        Some(Self {
            id: record.id,
            status: record.status,
            account_id: record.account_id,
            amount: record.amount,
            reason: record.reason.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            loan: LoanDetails::of(record)?,
        })
    }
}

/// The answer to accepting a loan's offer: the challenge that accepts it, whose text names the
/// principal, the account, the term, the rate, the instalment, the interest, the fee and the
/// total. Answer it at `/v1/loans/{id}/accept/confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoanAcceptance {
    /// The loan, still offered.
    pub loan: LoanView,
    /// The challenge.
    pub sca: ChallengeView,
}

/// The OAuth2 token endpoint's answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenResponse {
    /// The access token (a signed JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The rotating refresh token (opaque), when `offline_access` was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The OpenID Connect id token, on the authorization-code grant with scope `openid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Granted scopes, space-separated.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse").field("expires_in", &self.expires_in).field("scope", &self.scope).finish()
    }
}
