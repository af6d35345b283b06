//! International payments: a quote from an [`FxProvider`] (rate, fee, expiry), accepted by the
//! customer before it expires, becomes linked holds in one atomic write and an order to the
//! correspondent rail ([`RailId::Correspondent`]) in the payee's currency. From there its life
//! is the interbank payment's ([`super::lifecycle::transition`]): every leg posts when the rail
//! accepts, every leg is released when it rejects.
//!
//! **The money.** The customer converts `source` (in their account's currency) at `rate` units
//! of the target currency per unit of the source; the payee receives
//! `target = source × rate`, rounded **half-even** to the target's minor unit
//! ([`crate::rate::convert`]). The fee is in the source currency and charged on top: the account
//! is debited `source + fee`. Three holds, written together ([`request`]):
//!
//! | leg | debit | credit | amount | kind |
//! |---|---|---|---|---|
//! | 1 | customer (source) | FX position (source) | `source` | `fx` |
//! | 2 | customer (source) | fee income (source) | `fee` (no leg when zero) | `fee` |
//! | 3 | FX position (target) | international clearing (target) | `target` | `international` |
//!
//! Each currency's legs sum to zero: the bank's FX position is long `source` in the source
//! currency and short `target` in the target currency, which is the position a treasury desk
//! covers. The first leg's id is the payment's (derived from the customer's idempotency key);
//! the others are derived from it ([`leg_id`]), so a retry finds them all again.
//!
//! **The quote.** The provider keeps its quotes: at acceptance the quote is read again from it
//! by id ([`FxProvider::quote_by_id`]) and must be exactly the one the customer was shown
//! ([`check_accepted`]): an unknown id, any changed term or a quote past its expiry is
//! refused, and nothing is held.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::lifecycle::{self, Effect, RequestError, Transition, record_id};
use super::{CallError, CallKey, ExternalAccount, RailId};
use crate::Timestamp;
use crate::account::SystemAccount;
use crate::ids::{AccountId, CustomerId, TransferId};
use crate::money::{Currency, Money};
use crate::rate::{Rate, RateError, convert};
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use crate::transfer::{REFERENCE_CHARS_MAX, TransferKind, TransferRequest};

/// Namespace of the ids of an international payment's second and third legs.
const LEG_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2d8e_93a4_4b07_a1e5_58c0_7d2f_e914);

/// Longest quote id a provider may give.
pub const QUOTE_ID_LEN_MAX: usize = 64;

/// A provider's id of a quote: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, not dots only.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuoteId(String);

impl JsonSchema for QuoteId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "QuoteId".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": QUOTE_ID_LEN_MAX,
            "pattern": "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$",
            "description": "The FX provider's id of a quote",
        })
    }
}

/// A quote id that is empty, too long or has other characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a quote id is 1 to {QUOTE_ID_LEN_MAX} letters, digits, '-', '_' or '.'")]
pub struct InvalidQuoteId;

impl QuoteId {
    /// Parses a provider's quote id.
    pub fn parse(id: &str) -> Result<Self, InvalidQuoteId> {
        let ok = !id.is_empty()
            && id.len() <= QUOTE_ID_LEN_MAX
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            // `.` and `..` would name another path in the provider's URL.
            && !id.bytes().all(|b| b == b'.');
        if ok { Ok(Self(id.to_owned())) } else { Err(InvalidQuoteId) }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QuoteId {
    type Error = InvalidQuoteId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<QuoteId> for String {
    fn from(id: QuoteId) -> Self {
        id.0
    }
}

impl std::fmt::Display for QuoteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a customer asks a quote for: converting `source` into `target_currency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    /// The amount converted, in the source currency (the fee comes on top).
    pub source: Money,
    /// The payee's currency.
    pub target_currency: Currency,
}

/// A quote as the provider gives it (and gives it again by id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderQuote {
    /// The provider's id of it.
    pub id: QuoteId,
    /// The amount converted, in the source currency.
    pub source: Money,
    /// The payee's currency.
    pub target_currency: Currency,
    /// Units of the target currency per unit of the source.
    pub rate: Rate,
    /// The fee, in the source currency.
    pub fee: Money,
    /// When the provider stops honouring it.
    pub expires_at: Timestamp,
}

/// A quote as the customer sees and accepts it: every amount computed by the bank from the
/// provider's rate and fee, exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FxQuote {
    /// The provider's id of it.
    pub id: QuoteId,
    /// The amount converted, in the source currency.
    pub source: Money,
    /// The fee, in the source currency.
    pub fee: Money,
    /// What leaves the customer's account: `source + fee`.
    pub debit: Money,
    /// Units of the target currency per unit of the source, exact.
    pub rate: Rate,
    /// What the payee receives: `source × rate`, rounded half-even to the target's minor unit.
    pub target: Money,
    /// Until when it may be accepted.
    pub expires_at: Timestamp,
}

/// Why a quote cannot be given or accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// Source and target are the same currency: nothing to convert.
    #[error("the source and target currencies are the same")]
    SameCurrency,
    /// The amount to convert is not positive.
    #[error("the amount to convert must be positive")]
    Amount,
    /// The amount converts to nothing in the target currency.
    #[error("the amount is too small to convert into {0}")]
    TooSmall(Currency),
    /// The provider's quote does not fit what was asked (another pair, a negative fee, a fee in
    /// another currency): it is not offered.
    #[error("the provider's quote is not valid: {0}")]
    Provider(&'static str),
    /// The rate cannot be applied.
    #[error(transparent)]
    Rate(#[from] RateError),
    /// The provider knows no quote with this id.
    #[error("no such quote")]
    Unknown,
    /// The quote expired before it was accepted.
    #[error("the quote expired at {at}")]
    Expired {
        /// When it expired.
        at: Timestamp,
    },
    /// The quote accepted is not the one the provider gave (another rate, fee, amount or
    /// expiry): the customer must look at the current one.
    #[error("the quote differs from the one the provider gave")]
    Changed,
    /// Another payment converted at this quote: a quote is taken once, so that the bank's rate
    /// risk is the one amount it quoted.
    #[error("the quote was used for another payment")]
    Used,
}

/// An outside party that quotes currency conversions. Adapters (HTTP, the development
/// simulator, test doubles) implement it.
#[async_trait]
pub trait FxProvider: Send + Sync + std::fmt::Debug {
    /// A new quote for `request`; `key` is ours, so that a retried call gives the same quote.
    async fn quote(&self, request: &QuoteRequest, key: &CallKey) -> Result<ProviderQuote, CallError>;

    /// The quote with this id as the provider keeps it (`None`: it has none).
    async fn quote_by_id(&self, id: &QuoteId) -> Result<Option<ProviderQuote>, CallError>;
}

impl FxQuote {
    /// The customer's view of the provider's quote, checked: another currency than the
    /// source, a positive amount, a non-negative fee in the source currency, a target amount of
    /// at least one minor unit.
    pub fn of(p: &ProviderQuote) -> Result<FxQuote, QuoteError> {
        let source_currency = p.source.currency();
        if source_currency == p.target_currency {
            return Err(QuoteError::SameCurrency);
        }
        if !p.source.is_positive() {
            return Err(QuoteError::Amount);
        }
        if p.fee.currency() != source_currency || p.fee.amount_minor() < 0 {
            return Err(QuoteError::Provider("its fee is negative or in another currency"));
        }
        let target = convert(p.source, p.rate, p.target_currency)?;
        if !target.is_positive() {
            return Err(QuoteError::TooSmall(p.target_currency));
        }
        let debit =
            p.source.amount_minor().checked_add(p.fee.amount_minor()).ok_or(QuoteError::Rate(RateError::Overflow))?;
        Ok(FxQuote {
            id: p.id.clone(),
            source: p.source,
            fee: p.fee,
            debit: Money::new(debit, source_currency),
            rate: p.rate,
            target,
            expires_at: p.expires_at,
        })
    }

    /// Whether `request` is what this quote is for.
    pub fn answers(&self, request: &QuoteRequest) -> bool {
        self.source == request.source && self.target.currency() == request.target_currency
    }
}

/// Checks a quote the customer accepts at `now`: `current` is the provider's quote under its
/// id, read again now. It must exist, be exactly `shown`, and not have expired.
pub fn check_accepted(shown: &FxQuote, current: Option<&ProviderQuote>, now: Timestamp) -> Result<(), QuoteError> {
    let current = current.ok_or(QuoteError::Unknown)?;
    if FxQuote::of(current).ok().as_ref() != Some(shown) {
        return Err(QuoteError::Changed);
    }
    check_not_expired(shown, now)
}

/// The key of the mark that a payment took the quote `id`
/// ([`crate::transient::TransientKind::FxQuoteUsed`]): its SHA-256.
pub fn quote_key(id: &QuoteId) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_str().as_bytes()).into()
}

/// Whether `quote` may still be accepted at `now`.
pub fn check_not_expired(quote: &FxQuote, now: Timestamp) -> Result<(), QuoteError> {
    if now >= quote.expires_at { Err(QuoteError::Expired { at: quote.expires_at }) } else { Ok(()) }
}

/// The id of leg `n` (2 or 3) of the payment whose first leg is `first`.
pub fn leg_id(first: TransferId, n: u8) -> TransferId {
    let mut name = first.as_uuid().as_bytes().to_vec();
    name.push(n);
    TransferId::from_uuid(Uuid::new_v5(&LEG_NAMESPACE, &name))
}

/// A new international payment, as the payments façade hands it over once SCA allows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInternationalPayment {
    /// The payer.
    pub customer: CustomerId,
    /// The payer's account, in the quote's source currency.
    pub account: AccountId,
    /// The first leg's transfer id (derived from the customer's idempotency key).
    pub hold: TransferId,
    /// The quote accepted.
    pub quote: FxQuote,
    /// The payee, in the quote's target currency.
    pub creditor: ExternalAccount,
    /// Remittance information (at most 140 characters).
    pub remittance: Option<String>,
}

/// What an international payment's record keeps in its `details`: the interbank payment's
/// fields ([`super::lifecycle::InterbankDetails`], read by the rail's worker) and the quote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternationalDetails {
    /// The rail (the correspondent).
    pub rail: RailId,
    /// The payee.
    pub creditor: ExternalAccount,
    /// Remittance information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remittance: Option<String>,
    /// Our key with the rail.
    pub key: CallKey,
    /// The quote accepted.
    pub quote: FxQuote,
}

impl InternationalDetails {
    /// The details of `record`, if it is an international payment's.
    pub fn of(record: &ServiceRecord) -> Option<Self> {
        if record.kind != ServiceKind::InternationalTransfer {
            return None;
        }
        serde_json::from_value(serde_json::Value::Object(record.details.clone())).ok()
    }
}

/// The amount the rail carries for `record`: an international payment's target amount, an
/// interbank payment's own amount.
pub fn rail_amount(record: &ServiceRecord) -> Money {
    InternationalDetails::of(record).map_or(record.amount, |d| d.quote.target)
}

/// The legs of `p`, in order: the customer's source amount to the FX position, the fee (when
/// there is one), the FX position's target amount to the correspondent's clearing account.
/// Without a deadline: the payment's holds last until the rail decides.
pub fn legs(p: &NewInternationalPayment) -> Vec<TransferRequest> {
    let source = p.quote.source.currency();
    let target = p.quote.target.currency();
    let rail = RailId::Correspondent;
    let mut legs = vec![TransferRequest {
        id: p.hold,
        kind: TransferKind::Fx,
        debit_account: p.account,
        credit_account: SystemAccount::FxPosition.id(source),
        amount: p.quote.source,
        reference: p.remittance.clone(),
        hold_until: None,
    }];
    if p.quote.fee.is_positive() {
        legs.push(TransferRequest {
            id: leg_id(p.hold, 2),
            kind: TransferKind::Fee,
            debit_account: p.account,
            credit_account: SystemAccount::Fees.id(source),
            amount: p.quote.fee,
            reference: Some(format!("FX fee, quote {}", p.quote.id)),
            hold_until: None,
        });
    }
    legs.push(TransferRequest {
        id: leg_id(p.hold, 3),
        kind: rail.transfer_kind(),
        debit_account: SystemAccount::FxPosition.id(target),
        credit_account: rail.clearing_account(target),
        amount: p.quote.target,
        reference: p.remittance.clone(),
        hold_until: None,
    });
    legs
}

/// Checks `p` before anything is held: a consistent quote, a currency the rail carries, the
/// remittance information's bounds.
pub fn validate(p: &NewInternationalPayment) -> Result<(), RequestError> {
    let q = &p.quote;
    let consistent = q.source.is_positive()
        && q.target.is_positive()
        && q.fee.amount_minor() >= 0
        && q.fee.currency() == q.source.currency()
        && q.source.currency() != q.target.currency()
        && q.source.amount_minor().checked_add(q.fee.amount_minor()) == Some(q.debit.amount_minor())
        && q.debit.currency() == q.source.currency();
    if !consistent {
        return Err(RequestError::Amount);
    }
    let rail = RailId::Correspondent;
    if !rail.carries(q.target.currency()) {
        return Err(RequestError::Currency { rail, currency: q.target.currency() });
    }
    if let Some(r) = &p.remittance
        && (r.chars().count() > REFERENCE_CHARS_MAX || r.chars().any(char::is_control))
    {
        return Err(RequestError::Remittance);
    }
    Ok(())
}

/// The record of a new international payment (`requested`, due at once) and its effects: place
/// every leg (without a deadline), emit `service.updated`. The store writes them with the record
/// in one atomic write (`ServiceStore::request`), adopting the legs that were held while the
/// customer answered the challenge; the worker then sends the order.
pub fn request(p: &NewInternationalPayment, now: Timestamp) -> Result<Transition, RequestError> {
    validate(p)?;
    let rail = RailId::Correspondent;
    let details = InternationalDetails {
        rail,
        creditor: p.creditor.clone(),
        remittance: p.remittance.clone(),
        key: CallKey::of_transfer(p.hold),
        quote: p.quote.clone(),
    };
    let details = match serde_json::to_value(details) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => unreachable!("a struct serialises to a JSON object"),
    };
    let legs = legs(p);
    let record = ServiceRecord {
        id: record_id(p.hold),
        customer_id: p.customer,
        kind: ServiceKind::InternationalTransfer,
        status: ServiceStatus::Requested,
        account_id: p.account,
        amount: p.quote.source,
        transfers: legs.iter().map(|l| l.id).collect(),
        checks: 0,
        next_check_at: Some(now),
        stuck_since: None,
        reason: None,
        details,
        version: 0,
        created_at: now,
        updated_at: now,
    };
    let mut effects: Vec<Effect> = legs.into_iter().map(Effect::PlaceHold).collect();
    effects.push(Effect::Emit(lifecycle::event(&record)));
    Ok(Transition { record, effects })
}

#[cfg(test)]
mod tests;
