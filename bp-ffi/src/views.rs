//! The records the apps see, made from bp-core's wire types: amounts as integer minor units
//! with their currency (never floats), ids and times as strings, enums of the API by their wire
//! names (so a kind added by a newer server reads instead of failing).

#![forbid(unsafe_code)]

use bp_core::api::{
    AccountView, DeviceView, LoanView, Profile as ProfileWire, ServiceList, TransactionPage, TransferView,
};
use bp_core::customer::{BiometricEnrolment, Party};
use bp_core::money::Money;
use serde::Serialize;

use crate::error::Error;
use crate::payments::Intent;

/// An amount: integer minor units (cents) of an ISO 4217 currency.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Amount {
    /// Minor units: 12.50 EUR is 1250.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl From<Money> for Amount {
    fn from(m: Money) -> Self {
        Self { amount_minor: m.amount_minor(), currency: m.currency().code().to_owned() }
    }
}

/// The wire name of an API enum (`"posted"`, `"device_signature"`), or of a tagged one's tag.
pub(crate) fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(o)) => ["status", "state", "kind", "type"]
            .iter()
            .find_map(|k| o.get(*k).and_then(|v| v.as_str()))
            .unwrap_or("unknown")
            .to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// `id` checked to be a UUID, so it cannot change the path it goes into.
pub(crate) fn path_id(id: &str) -> Result<&str, Error> {
    uuid::Uuid::parse_str(id).map(|_| id).map_err(|_| Error::Invalid { field: "id", reason: "not a UUID".to_owned() })
}

/// Sets `key` of the JSON object `body` when `value` is present.
pub(crate) fn put_optional(body: &mut serde_json::Value, key: &str, value: Option<String>) {
    if let Some(v) = value {
        body[key] = v.into();
    }
}

/// The lines a payment's challenge must hold: its amount and currency, and `more`.
pub(crate) fn expect(amount: &Money, more: &[(&str, String)]) -> Vec<(String, String)> {
    let mut lines = vec![
        ("amount".to_owned(), amount.to_decimal_string()),
        ("currency".to_owned(), amount.currency().code().to_owned()),
    ];
    lines.extend(more.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    lines
}

/// An identity document, for the profile screen.
#[derive(Clone, uniffi::Record)]
pub struct IdentityDocument {
    /// `identity_card`, `passport`, `driving_licence`, `residence_permit`.
    pub kind: String,
    /// The full number (personal data: show it on the profile screen only, never log it).
    pub number: String,
    /// The number with all but its last four characters masked.
    pub number_masked: String,
    /// ISO 3166-1 alpha-2 issuing country.
    pub issuing_country: String,
    /// Expiry date (`YYYY-MM-DD`).
    pub expires_on: Option<String>,
}

impl std::fmt::Debug for IdentityDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityDocument").field("kind", &self.kind).field("number", &"<redacted>").finish()
    }
}

/// The customer's profile (FR4).
#[derive(Clone, Debug, uniffi::Record)]
pub struct Profile {
    /// Customer id.
    pub customer_id: String,
    /// Login name.
    pub username: String,
    /// The person's full name or the company's legal name.
    pub display_name: String,
    /// `person` or `legal_entity`.
    pub party_kind: String,
    /// A company's tax id, legal representative, registry number and country of
    /// incorporation; a person's date of birth. Empty values are absent.
    pub party_fields: Vec<ProfileField>,
    /// Identity documents.
    pub documents: Vec<IdentityDocument>,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone: Option<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Whether a device unlocks its key with the customer's biometric.
    pub biometric_enrolled: bool,
    /// `pending`, `verified`, `rejected`.
    pub kyc: String,
    /// Whether there is a photo ([`crate::BpSdk::photo`]).
    pub has_photo: bool,
}

/// A named field of the profile.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ProfileField {
    /// Its name (`tax_id`, `date_of_birth`, …).
    pub name: String,
    /// Its value.
    pub value: String,
}

impl From<ProfileWire> for Profile {
    fn from(p: ProfileWire) -> Self {
        let field = |name: &str, value: String| ProfileField { name: name.to_owned(), value };
        let (party_kind, party_fields) = match &p.party {
            Party::Person(person) => {
                ("person", person.date_of_birth.map(|d| field("date_of_birth", d.to_string())).into_iter().collect())
            }
            Party::LegalEntity(company) => (
                "legal_entity",
                vec![
                    field("legal_name", company.legal_name.clone()),
                    field("tax_id", company.tax_id.clone()),
                    field("legal_representative", company.legal_representative.clone()),
                    field("incorporation_country", company.incorporation.country.clone()),
                    field("incorporation_date", company.incorporation.date.to_string()),
                    field("registry_number", company.incorporation.registry_number.clone()),
                ],
            ),
        };
        Self {
            customer_id: p.id.to_string(),
            username: p.username,
            display_name: p.display_name,
            party_kind: party_kind.to_owned(),
            party_fields,
            documents: p
                .documents
                .into_iter()
                .map(|d| IdentityDocument {
                    kind: wire_name(&d.kind),
                    number: d.number,
                    number_masked: d.number_masked,
                    issuing_country: d.issuing_country,
                    expires_on: d.expires_on.map(|e| e.to_string()),
                })
                .collect(),
            email: p.contact.email,
            phone: p.contact.phone,
            address: p.contact.address,
            biometric_enrolled: matches!(p.biometric, BiometricEnrolment::Enrolled { .. }),
            kyc: wire_name(&p.kyc),
            has_photo: p.photo_url.is_some(),
        }
    }
}

/// An account with its balances.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Account {
    /// Id.
    pub id: String,
    /// Account number (12 digits).
    pub number: String,
    /// `current`, `savings`, …
    pub kind: String,
    /// `open`, `frozen`, `closed`.
    pub status: String,
    /// Posted balance.
    pub posted: Amount,
    /// Held by pending payments.
    pub held: Amount,
    /// What may be spent: posted − held.
    pub available: Amount,
    /// The sequence number of the account's latest event (matches live events).
    pub last_event_seq: u64,
}

impl From<AccountView> for Account {
    fn from(a: AccountView) -> Self {
        Self {
            id: a.id.to_string(),
            number: a.number,
            kind: wire_name(&a.kind),
            status: wire_name(&a.status),
            posted: a.balances.posted.into(),
            held: a.balances.held.into(),
            available: a.balances.available.into(),
            last_event_seq: a.last_event_seq,
        }
    }
}

/// Filters of a history page; all optional.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct HistoryFilter {
    /// Only lines posted at or after (RFC 3339).
    pub posted_from: Option<String>,
    /// Only lines posted before (RFC 3339).
    pub posted_before: Option<String>,
    /// `debit` or `credit`.
    pub direction: Option<String>,
    /// Only lines of at least this amount (in the account's currency).
    pub amount_min: Option<Amount>,
    /// Only lines of at most this amount (in the account's currency).
    pub amount_max: Option<Amount>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page length, 1 to [`HISTORY_PAGE_LEN_MAX`] (default 50).
    pub limit: Option<u32>,
}

/// The longest history page the server gives.
pub const HISTORY_PAGE_LEN_MAX: u32 = 500;

impl HistoryFilter {
    /// The query string of these filters.
    pub(crate) fn query(&self) -> Result<String, Error> {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("from", &self.posted_from),
            ("to", &self.posted_before),
            ("direction", &self.direction),
            ("cursor", &self.cursor),
        ] {
            if let Some(v) = value {
                q.append_pair(name, v);
            }
        }
        for (name, value) in [("amount_min", &self.amount_min), ("amount_max", &self.amount_max)] {
            if let Some(amount) = value {
                let money = crate::payments::money(amount.amount_minor, &amount.currency).map_err(|_| {
                    Error::Invalid { field: name, reason: "a positive amount of a currency".to_owned() }
                })?;
                q.append_pair(name, &money.to_decimal_string());
            }
        }
        if let Some(limit) = self.limit {
            if limit == 0 || limit > HISTORY_PAGE_LEN_MAX {
                return Err(Error::Invalid { field: "limit", reason: format!("1 to {HISTORY_PAGE_LEN_MAX}") });
            }
            q.append_pair("limit", &limit.to_string());
        }
        Ok(q.finish())
    }
}

/// A line of an account's history.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Transaction {
    /// The account's event sequence number of this line.
    pub seq: u64,
    /// The transfer.
    pub transfer_id: String,
    /// `internal`, `external`, …
    pub kind: String,
    /// `debit` or `credit`.
    pub direction: String,
    /// Amount, positive.
    pub amount: Amount,
    /// Posted balance after this line.
    pub balance_after: Amount,
    /// The other account.
    pub counterparty_account_id: String,
    /// The transfer's reference.
    pub reference: Option<String>,
    /// When it was posted (RFC 3339).
    pub posted_at: String,
}

/// A page of history, newest first.
#[derive(Clone, Debug, uniffi::Record)]
pub struct HistoryPage {
    /// The lines.
    pub items: Vec<Transaction>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    pub next_cursor: Option<String>,
}

impl From<TransactionPage> for HistoryPage {
    fn from(page: TransactionPage) -> Self {
        let items = page
            .items
            .into_iter()
            .map(|t| Transaction {
                seq: t.seq,
                transfer_id: t.transfer_id.to_string(),
                kind: wire_name(&t.kind),
                direction: wire_name(&t.direction),
                amount: t.amount.into(),
                balance_after: t.balance_after.into(),
                counterparty_account_id: t.counterparty_account_id.to_string(),
                reference: t.reference,
                posted_at: t.posted_at.to_rfc3339(),
            })
            .collect();
        Self { items, next_cursor: page.next_cursor }
    }
}

/// A device registration waiting for its confirmation.
#[derive(Clone, Debug, uniffi::Record)]
pub struct DeviceEnrolment {
    /// The device's id.
    pub device_id: String,
    /// The challenge to answer.
    pub challenge_id: String,
    /// How it may be answered (`totp` for a first device).
    pub methods: Vec<String>,
    /// What is being confirmed, in words.
    pub summary: String,
}

/// A registered device.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Device {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// When it was registered (RFC 3339).
    pub created_at: String,
}

impl From<DeviceView> for Device {
    fn from(d: DeviceView) -> Self {
        Self { id: d.id.to_string(), name: d.name, created_at: d.created_at.to_rfc3339() }
    }
}

/// A payment to another account of the bank.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TransferDraft {
    /// The customer's account the money leaves.
    pub from_account_id: String,
    /// The payee's account number.
    pub to_account_number: String,
    /// How much.
    pub amount: Amount,
    /// Free text for both sides (at most 140 characters).
    pub reference: Option<String>,
}

/// A payment to an account at another bank (SEPA: EUR).
#[derive(Clone, Debug, uniffi::Record)]
pub struct InterbankDraft {
    /// The customer's account the money leaves.
    pub from_account_id: String,
    /// The payee's IBAN.
    pub to_iban: String,
    /// The payee's name.
    pub to_name: String,
    /// The payee's bank's BIC, when known.
    pub to_bic: Option<String>,
    /// How much.
    pub amount: Amount,
    /// Remittance information (at most 140 characters).
    pub reference: Option<String>,
}

/// A currency conversion quote for a payment abroad.
#[derive(Clone, Debug, uniffi::Record)]
pub struct FxQuote {
    /// The amount converted, in the account's currency.
    pub source: Amount,
    /// The bank's fee, on top.
    pub fee: Amount,
    /// What leaves the account: source + fee.
    pub debit: Amount,
    /// The rate, a decimal.
    pub rate: String,
    /// What the payee receives.
    pub target: Amount,
    /// Valid until (RFC 3339).
    pub expires_at: String,
    /// The quote as the bank gave it, sent back unchanged when paying (opaque).
    pub quote: String,
}

impl FxQuote {
    pub(crate) fn of(q: &bp_core::external::fx::FxQuote) -> Result<Self, crate::BpError> {
        Ok(Self {
            source: q.source.into(),
            fee: q.fee.into(),
            debit: q.debit.into(),
            rate: q.rate.to_string(),
            target: q.target.into(),
            expires_at: q.expires_at.to_rfc3339(),
            quote: serde_json::to_string(q).map_err(|e| Error::Corrupt(e.to_string()))?,
        })
    }
}

/// A payment abroad at a quote.
#[derive(Clone, Debug, uniffi::Record)]
pub struct InternationalDraft {
    /// The customer's account the money leaves.
    pub from_account_id: String,
    /// The quote accepted.
    pub quote: FxQuote,
    /// The payee's IBAN.
    pub to_iban: String,
    /// The payee's name.
    pub to_name: String,
    /// The payee's bank's BIC, when known.
    pub to_bic: Option<String>,
    /// Remittance information (at most 140 characters).
    pub reference: Option<String>,
}

/// A payment stored on the phone with its idempotency key, until the bank's final answer.
#[derive(Clone, Debug, uniffi::Record)]
pub struct PaymentIntent {
    /// Its id: the idempotency key (a UUIDv7) sent with every try.
    pub id: String,
    /// How much.
    pub amount: Amount,
    /// To whom, as the customer entered it.
    pub payee: String,
    /// Whether it waits for the customer's confirmation ([`crate::BpSdk::confirm_payment`]).
    pub awaiting_confirmation: bool,
}

impl From<&Intent> for PaymentIntent {
    fn from(i: &Intent) -> Self {
        Self {
            id: i.id.clone(),
            amount: i.amount.into(),
            payee: i.payee.clone(),
            awaiting_confirmation: i.challenge.is_some(),
        }
    }
}

/// What the customer confirms before the device key signs.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Confirmation {
    /// The payment in words, read from the signed text ("Pay 250.00 EUR to account …").
    pub summary: String,
    /// The exact text the device key signs: it names amount, currency, payee and transfer.
    pub text: String,
    /// Answer before (RFC 3339).
    pub expires_at: String,
}

/// A transfer.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Transfer {
    /// Id.
    pub id: String,
    /// `pending`, `posted`, `voided`, `failed`.
    pub state: String,
    /// The account the money leaves.
    pub from_account_id: String,
    /// The account the money enters.
    pub to_account_id: String,
    /// How much.
    pub amount: Amount,
    /// Reference.
    pub reference: Option<String>,
}

impl From<TransferView> for Transfer {
    fn from(t: TransferView) -> Self {
        Self {
            id: t.id.to_string(),
            state: wire_name(&t.state),
            from_account_id: t.from_account.to_string(),
            to_account_id: t.to_account.to_string(),
            amount: t.amount.into(),
            reference: t.reference,
        }
    }
}

/// The bank's answer to a payment.
#[derive(Clone, Debug, uniffi::Enum)]
pub enum PaymentOutcome {
    /// Final: posted (or, to another bank, handed to the rail: follow `service_id`).
    Done {
        /// The transfer.
        transfer: Transfer,
        /// Why it needed no SCA (`own_accounts`, `low_value`, …), when it did not.
        exemption: Option<String>,
        /// The external service record, for a payment to another bank.
        service_id: Option<String>,
    },
    /// The customer must confirm: show `confirmation.summary` (and `text`), then
    /// [`crate::BpSdk::confirm_payment`] with `payment_id`.
    NeedsConfirmation {
        /// The payment.
        payment_id: String,
        /// The pending transfer.
        transfer_id: String,
        /// What to confirm.
        confirmation: Confirmation,
    },
}

/// An external service the customer used.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Service {
    /// Id (a loan's id, for a loan).
    pub id: String,
    /// `interbank_transfer`, `international_transfer`, `loan`.
    pub kind: String,
    /// Where it is (`submitted`, `settled`, `active`, …).
    pub status: String,
    /// The amount.
    pub amount: Amount,
    /// When it was requested (RFC 3339).
    pub created_at: String,
}

/// A page of external services, newest first.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ServicePage {
    /// The services.
    pub services: Vec<Service>,
    /// Whether external services are connected to this bank's server at all.
    pub connected: bool,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

impl From<ServiceList> for ServicePage {
    fn from(list: ServiceList) -> Self {
        let services = list
            .services
            .into_iter()
            .map(|s| Service {
                id: s.id.to_string(),
                kind: wire_name(&s.kind),
                status: wire_name(&s.status),
                amount: s.amount.into(),
                created_at: s.created_at.to_rfc3339(),
            })
            .collect();
        Self { services, connected: list.external_services_connected, next_cursor: list.next_cursor }
    }
}

/// An application for a loan.
#[derive(Clone, Debug, uniffi::Record)]
pub struct LoanApplication {
    /// The account it is paid into and repaid from.
    pub account_id: String,
    /// The principal asked for.
    pub amount: Amount,
    /// The term, in monthly instalments.
    pub term_months: u32,
    /// What it is for (1 to 140 characters).
    pub purpose: String,
}

/// An early repayment of a loan's principal.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LoanRepayment {
    /// Part of the principal, in the loan's currency: the remaining instalments are recomputed.
    Partial {
        /// The principal repaid (less than what is owed).
        amount: Amount,
    },
    /// All the principal still owed: the loan closes.
    Full,
}

/// An instalment of a loan's schedule.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Instalment {
    /// 1, 2, …
    pub number: u32,
    /// Due date (`YYYY-MM-DD`).
    pub due_on: String,
    /// Principal part.
    pub principal: Amount,
    /// Interest part.
    pub interest: Amount,
    /// The instalment.
    pub total: Amount,
    /// `due` or `paid`.
    pub state: String,
}

/// A loan.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Loan {
    /// Id.
    pub id: String,
    /// `requested`, `submitted`, `offered`, `rejected`, `active`, `in_arrears`, `closed`, …
    pub status: String,
    /// The principal.
    pub amount: Amount,
    /// The offered or agreed term in months, once offered.
    pub term_months: Option<u32>,
    /// The offered annual rate, a decimal, once offered.
    pub annual_rate: Option<String>,
    /// The schedule, once disbursed.
    pub schedule: Vec<Instalment>,
    /// Principal still owed.
    pub outstanding: Amount,
}

impl From<LoanView> for Loan {
    fn from(l: LoanView) -> Self {
        let offer = l.loan.offer.as_ref();
        Self {
            id: l.id.to_string(),
            status: wire_name(&l.status),
            amount: l.amount.into(),
            term_months: offer.map(|o| o.term_months),
            annual_rate: offer.map(|o| o.annual_rate.to_string()),
            schedule: l
                .loan
                .schedule
                .iter()
                .map(|i| Instalment {
                    number: i.number,
                    due_on: i.due_on.to_string(),
                    principal: i.principal.into(),
                    interest: i.interest.into(),
                    total: i.total.into(),
                    state: wire_name(&i.state),
                })
                .collect(),
            outstanding: l.loan.outstanding.into(),
        }
    }
}
