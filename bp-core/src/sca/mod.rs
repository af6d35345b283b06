//! Strong customer authentication (EU PSD2 RTS as defaults), written once for every caller of
//! bp: the rules as pure functions — which payments are exempt (between a customer's own
//! accounts, to a trusted beneficiary, or of low value within cumulative limits since the last
//! SCA), which answers a challenge accepts, when a challenge can still be answered, whether it
//! is dynamically linked to what it authorizes — and the [`Sca`] service that applies them to a
//! customer's records in a [`SecurityStore`](crate::security::SecurityStore).
//!
//! - [`factors`]: checking device-key signatures and TOTP codes.
//! - [`eur`]: euro equivalents of payments, which the limits are stated in.
//! - [`lockout`]: progressive lockout after repeated failures.
//! - [`limits`]: bounds on names, devices, passkeys and beneficiaries.
//! - [`Sca`]: challenges opened and answered, failures counted, devices registered, the audit
//!   log written; the payments façade ([`crate::payments`]) builds on it. Its passkey rules
//!   (registration after a recent sign-in, the bound, removal, sign-in) are in `passkeys.rs`.

mod error;
pub mod eur;
pub mod factors;
pub mod limits;
pub mod lockout;
mod passkeys;
mod service;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use error::{Closed, ScaError};
pub use eur::EurRate;
use eur::eur_units_minor;
pub use lockout::LockoutRules;
pub use service::{CustomerGuard, DeviceChallenge, Sca, SecondFactor, Verified};

use crate::Timestamp;
use crate::account_number::AccountNumber;
use crate::external::ExternalAccount;
use crate::ids::{ChallengeId, CustomerId, DeviceId};
use crate::money::{Currency, Money};
use crate::security::{ChallengePurpose, ChallengeState, ScaChallenge, ScaMethod, SecurityState};
use crate::transfer::Transfer;

/// The demo's rate of US dollars per euro (`ScaRules::default`): a placeholder, as every default
/// rate is; the bank sets its reference rates.
const DEMO_USD_RATE: EurRate = match EurRate::from_parts(110, 2) {
    Some(rate) => rate,
    None => panic!("1.10 is a valid rate"),
};

/// Namespace of challenge ids derived from what they authorize.
const CHALLENGE_NAMESPACE: Uuid = Uuid::from_u128(0x8b5e_0d44_7c19_4e02_a3f6_21d9_6c70_e418);

/// Why a payment needed no SCA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Exemption {
    /// Between two accounts of the same customer.
    OwnAccounts,
    /// To a trusted beneficiary.
    TrustedBeneficiary,
    /// A low-value payment within the cumulative limits.
    LowValue,
}

/// The configurable SCA rules (the server's `[sca]` settings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaRules {
    /// A challenge is answerable this long, in seconds.
    pub challenge_ttl_s: u64,
    /// Wrong answers before a challenge fails.
    pub challenge_failures_max: u32,
    /// Transfers between a customer's own accounts need no SCA (RTS art. 15).
    pub exempt_own_accounts: bool,
    /// Transfers to trusted beneficiaries need no SCA (RTS art. 13).
    pub exempt_trusted_beneficiaries: bool,
    /// Low-value payments below this many euro (their euro equivalent, see `eur_rates`) need no
    /// SCA (0 turns it off)…
    pub low_value_amount_max_units: i64,
    /// …while the payments since the last SCA, this one included, stay within this cumulative
    /// amount in euro…
    pub low_value_total_max_units: i64,
    /// …and this number (RTS art. 16 lets a bank use either limit; both are applied).
    pub low_value_count_max: u32,
    /// A customer without a device key may answer a payment challenge with a TOTP code for
    /// amounts up to this many euro (0: never); payments to a beneficiary trusted with a TOTP
    /// code are exempt only up to it as well.
    pub totp_payment_amount_max_units: i64,
    /// Units of each currency per euro (exact decimals, e.g. `USD = "1.10"`): how payments in
    /// other currencies are compared with the limits above. Set them to the bank's reference
    /// rates; a currency without one gets no low-value or TOTP-trusted exemption and no TOTP
    /// answers. The default has a rate for the demo's US dollars only.
    #[serde(deserialize_with = "eur::deserialize_rates")]
    pub eur_rates: BTreeMap<Currency, EurRate>,
    /// What needs a recent sign-in (registering a first device with a TOTP code, removing a
    /// device) needs one at most this many seconds old; older sessions must sign in again.
    pub recent_sign_in_max_age_s: u64,
}

impl Default for ScaRules {
    fn default() -> Self {
        Self {
            challenge_ttl_s: 300,
            challenge_failures_max: 3,
            exempt_own_accounts: true,
            exempt_trusted_beneficiaries: true,
            low_value_amount_max_units: 30,
            low_value_total_max_units: 100,
            low_value_count_max: 5,
            totp_payment_amount_max_units: 500,
            recent_sign_in_max_age_s: 300,
            eur_rates: BTreeMap::from([(Currency::USD, DEMO_USD_RATE)]),
        }
    }
}

impl ScaRules {
    /// Refuses settings under which no challenge could ever be answered.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.challenge_ttl_s == 0 || self.challenge_failures_max == 0 || self.recent_sign_in_max_age_s == 0 {
            return Err(
                "sca.challenge_ttl_s, sca.challenge_failures_max and sca.recent_sign_in_max_age_s must be positive",
            );
        }
        Ok(())
    }

    /// The euro equivalent of `amount`, in cents, rounded up; `None` without a rate.
    pub fn eur_minor(&self, amount: &Money) -> Option<i64> {
        eur::eur_minor(amount, self.eur_rates.get(&amount.currency()).copied())
    }

    /// How long a challenge made now is answerable.
    pub fn challenge_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.challenge_ttl_s).unwrap_or(i64::MAX / 1_000_000))
    }
}

/// Who the payee of a payment is to its payer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayeeRelation {
    /// Another account of the payer.
    OwnAccount,
    /// A beneficiary the payer trusts, and how.
    TrustedBeneficiary(Trust),
    /// Anyone else.
    Other,
}

/// How a beneficiary came to be trusted, which bounds what trusting it exempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// With a device's signature of a text naming the payee (dynamically linked): payments to it
    /// are exempt at any amount.
    Linked,
    /// With a TOTP code (or before the method was recorded): payments to it are exempt only up
    /// to the TOTP limit, so that one phished code cannot open an account to any amount.
    Totp,
}

impl Trust {
    /// The trust a beneficiary trusted by `method` has (`None`: recorded before methods were).
    pub fn of(method: Option<ScaMethod>) -> Self {
        match method {
            Some(ScaMethod::DeviceSignature) => Trust::Linked,
            Some(ScaMethod::Totp) | None => Trust::Totp,
        }
    }
}

/// The exemption a payment of `amount` to a payee of `relation` has whatever the customer's
/// recent payments: own accounts and trusted beneficiaries, when the rules allow them (a
/// beneficiary trusted with a TOTP code only up to the TOTP limit).
pub fn standing_exemption(rules: &ScaRules, relation: PayeeRelation, amount: &Money) -> Option<Exemption> {
    match relation {
        PayeeRelation::OwnAccount if rules.exempt_own_accounts => Some(Exemption::OwnAccounts),
        PayeeRelation::TrustedBeneficiary(trust) if rules.exempt_trusted_beneficiaries => {
            let within = match trust {
                Trust::Linked => true,
                Trust::Totp => within_totp_limit(rules, amount),
            };
            within.then_some(Exemption::TrustedBeneficiary)
        }
        _ => None,
    }
}

/// Whether `amount` is within what a TOTP code may authorize (in euro).
fn within_totp_limit(rules: &ScaRules, amount: &Money) -> bool {
    rules.totp_payment_amount_max_units > 0
        && rules.eur_minor(amount).is_some_and(|eur| eur <= eur_units_minor(rules.totp_payment_amount_max_units))
}

/// Whether a payment of `amount` to a payee of `relation` is exempt, and by which rule (tried
/// in this order: own accounts, trusted beneficiary, low value given `state`'s counters).
pub fn exemption(
    rules: &ScaRules,
    relation: PayeeRelation,
    amount: &Money,
    state: &SecurityState,
) -> Option<Exemption> {
    standing_exemption(rules, relation, amount)
        .or_else(|| low_value_allows(rules, amount, state).then_some(Exemption::LowValue))
}

/// Whether the low-value exemption covers a payment of `amount` given the counters since the
/// last SCA: below the single-payment limit, and within both the cumulative amount and the
/// count once this payment is added — all in euro (see [`ScaRules::eur_rates`]).
pub fn low_value_allows(rules: &ScaRules, amount: &Money, state: &SecurityState) -> bool {
    if rules.low_value_amount_max_units <= 0 || state.low_value_count >= rules.low_value_count_max {
        return false;
    }
    let (Some(eur), Some(total)) = (rules.eur_minor(amount), low_value_total_eur(rules, state)) else { return false };
    eur < eur_units_minor(rules.low_value_amount_max_units)
        && total.checked_add(eur).is_some_and(|t| t <= eur_units_minor(rules.low_value_total_max_units))
}

/// The low-value payments since the last SCA, in euro cents. They are kept as euro; totals kept
/// per currency by earlier versions are converted too (`None` when a rate is missing).
fn low_value_total_eur(rules: &ScaRules, state: &SecurityState) -> Option<i64> {
    state.low_value_total_minor.iter().try_fold(0i64, |sum, (currency, minor)| {
        Some(sum.saturating_add(rules.eur_minor(&Money::new(*minor, *currency))?))
    })
}

/// Counts a payment made under the low-value exemption (its euro equivalent).
pub fn count_low_value(rules: &ScaRules, state: &mut SecurityState, amount: &Money) {
    state.low_value_count = state.low_value_count.saturating_add(1);
    let eur = rules.eur_minor(amount).unwrap_or(i64::MAX);
    let total = state.low_value_total_minor.entry(Currency::EUR).or_insert(0);
    *total = total.saturating_add(eur);
}

/// An SCA happened (a sign-in with two factors, an answered challenge): the low-value
/// counters start again.
pub fn reset_low_value(state: &mut SecurityState) {
    state.low_value_count = 0;
    state.low_value_total_minor.clear();
}

/// The possession factors a customer has enrolled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Factors {
    /// At least one registered, unremoved device key.
    pub device: bool,
    /// An authenticator app (a TOTP secret).
    pub totp: bool,
}

/// How a customer with `factors` may answer a challenge for `purpose`: with a device key's
/// signature when they have a device; otherwise with a TOTP code, for a payment only up to the
/// TOTP limit; otherwise not at all (they must register a device).
pub fn answer_methods(rules: &ScaRules, factors: Factors, purpose: &ChallengePurpose) -> Vec<ScaMethod> {
    if factors.device {
        return vec![ScaMethod::DeviceSignature];
    }
    let totp_allowed = match purpose {
        ChallengePurpose::Payment { amount, .. } | ChallengePurpose::ExternalPayment { amount, .. } => {
            within_totp_limit(rules, amount)
        }
        ChallengePurpose::InternationalPayment { quote, .. } => within_totp_limit(rules, &quote.debit),
        // A loan's principal is money the customer will owe: the same limit as a payment.
        ChallengePurpose::LoanAcceptance { amount, .. } => within_totp_limit(rules, amount),
        // Trusted by TOTP, a beneficiary's payments are exempt only within the TOTP limit; a
        // first device's registration by TOTP needs a recent sign-in (`recently_signed_in`).
        ChallengePurpose::Beneficiary { .. } | ChallengePurpose::Device { .. } => true,
    };
    if factors.totp && totp_allowed { vec![ScaMethod::Totp] } else { Vec::new() }
}

/// The id of the challenge that authorizes `of` (a transfer's or a beneficiary's id): one
/// challenge per thing authorized, found again after a crash or a retry.
pub fn challenge_id(of: &Uuid) -> ChallengeId {
    ChallengeId::from_uuid(Uuid::new_v5(&CHALLENGE_NAMESPACE, of.as_bytes()))
}

/// A new, open challenge of `customer` for `purpose`, answerable from `now` until `expires_at`.
/// `nonce` is unpredictable (part of the text a device signs, so that no two challenges are
/// signed alike).
pub fn new_challenge(
    customer: CustomerId,
    purpose: ChallengePurpose,
    nonce: String,
    now: Timestamp,
    expires_at: Timestamp,
) -> ScaChallenge {
    let of = match &purpose {
        ChallengePurpose::Payment { transfer_id, .. }
        | ChallengePurpose::ExternalPayment { transfer_id, .. }
        | ChallengePurpose::InternationalPayment { transfer_id, .. } => *transfer_id.as_uuid(),
        ChallengePurpose::LoanAcceptance { loan_id, .. } => *loan_id.as_uuid(),
        ChallengePurpose::Beneficiary { beneficiary_id, .. } => *beneficiary_id.as_uuid(),
        ChallengePurpose::Device { device_id, .. } => *device_id.as_uuid(),
    };
    ScaChallenge {
        id: challenge_id(&of),
        customer_id: customer,
        purpose,
        nonce,
        created_at: now,
        expires_at,
        failures: 0,
        state: ChallengeState::Open,
    }
}

/// Whether `challenge` can be answered at `now`, or why not.
pub fn answerable(challenge: &ScaChallenge, now: Timestamp) -> Result<(), Closed> {
    match challenge.state {
        ChallengeState::Open if challenge.expires_at > now => Ok(()),
        ChallengeState::Open => Err(Closed::Expired),
        ChallengeState::Answered { .. } => Err(Closed::Answered),
        ChallengeState::Failed => Err(Closed::Failed),
    }
}

/// Whether a customer who signed in at `signed_in_at` (with both factors) did so recently
/// enough, at `now`, for what needs a recent sign-in; otherwise they must sign in again (step
/// up). A session that did not sign in here (an external issuer's token) is never recent.
pub fn recently_signed_in(rules: &ScaRules, signed_in_at: Option<Timestamp>, now: Timestamp) -> Result<(), ScaError> {
    let max_age_s = rules.recent_sign_in_max_age_s;
    let max_age = chrono::Duration::seconds(i64::try_from(max_age_s).unwrap_or(i64::MAX / 1_000_000));
    match signed_in_at {
        Some(at) if at <= now && now - at <= max_age => Ok(()),
        _ => Err(ScaError::StepUp { max_age_s }),
    }
}

/// Dynamic linking: whether `challenge` authorizes exactly `transfer`, of its amount, to the
/// account numbered `payee`. Checked again when the answer arrives, so that a transfer or a
/// challenge changed in between is never posted on the strength of the other.
pub fn links(challenge: &ScaChallenge, transfer: &Transfer, payee: AccountNumber) -> bool {
    matches!(&challenge.purpose,
        ChallengePurpose::Payment { transfer_id, amount, payee: signed }
            if *transfer_id == transfer.id && *amount == transfer.amount && *signed == payee)
}

/// Dynamic linking for a payment to another bank: whether `challenge` authorizes exactly
/// `transfer`, of its amount, to exactly `payee` (IBAN, name and BIC).
pub fn links_external(challenge: &ScaChallenge, transfer: &Transfer, payee: &ExternalAccount) -> bool {
    matches!(&challenge.purpose,
        ChallengePurpose::ExternalPayment { transfer_id, amount, payee: signed }
            if *transfer_id == transfer.id && *amount == transfer.amount && signed == payee)
}

/// Dynamic linking for a payment abroad: whether `challenge` authorizes exactly `transfer` (the
/// payment's first leg, of the quote's source amount) under exactly `quote` to exactly `payee`.
pub fn links_international(
    challenge: &ScaChallenge,
    transfer: &Transfer,
    quote: &crate::external::fx::FxQuote,
    payee: &ExternalAccount,
) -> bool {
    matches!(&challenge.purpose,
        ChallengePurpose::InternationalPayment { transfer_id, quote: signed, payee: signed_payee }
            if *transfer_id == transfer.id && transfer.amount == quote.source && signed == quote
                && signed_payee == payee)
}

/// Dynamic linking for a loan: whether `challenge` authorizes accepting exactly `loan` (its
/// principal) under exactly `offer`, paid into the account numbered `account`. A changed offer
/// or principal gives another text, so a challenge answered for one never accepts the other.
pub fn links_loan(
    challenge: &ScaChallenge,
    loan: &crate::service_record::ServiceRecord,
    offer: &crate::external::loan::LoanOffer,
    account: AccountNumber,
) -> bool {
    matches!(&challenge.purpose,
        ChallengePurpose::LoanAcceptance { loan_id, amount, account: signed_account, offer: signed }
            if *loan_id == loan.id && *amount == loan.amount && *signed_account == account && signed == offer)
}

/// An answer to an SCA challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScaAnswer {
    /// A registered device key's signature of the challenge's `message`.
    DeviceSignature {
        /// The challenge.
        challenge_id: ChallengeId,
        /// The device.
        device_id: DeviceId,
        /// ECDSA P-256 / SHA-256 signature, DER or 64-byte r‖s, base64url without padding.
        #[schemars(length(min = 86, max = 96), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
        signature: String,
    },
    /// A TOTP code, where the challenge's `methods` allows it.
    Totp {
        /// The challenge.
        challenge_id: ChallengeId,
        /// The six-digit code.
        #[schemars(regex(pattern = r"^[0-9]{6}$"))]
        code: String,
    },
}

impl ScaAnswer {
    /// The challenge answered.
    pub fn challenge_id(&self) -> ChallengeId {
        match self {
            ScaAnswer::DeviceSignature { challenge_id, .. } | ScaAnswer::Totp { challenge_id, .. } => *challenge_id,
        }
    }
}

/// The text a device signs to answer `challenge`: every value the challenge authorizes, one
/// per line, so that a changed amount, currency, payee or transfer gives another text.
///
/// Version 1 (`bp-sca-v1`) is the format of payments to this bank's accounts, beneficiaries and
/// devices, unchanged since it was first signed. Version 2 (`bp-sca-v2`) is a payment to
/// another bank: its payee lines are `iban:` (electronic form), `name:` (the holder's name,
/// which has no control character, so it is one line and cannot forge the next) and `bic:`
/// (empty when none was given), and its values may be any Unicode. Version 3 (`bp-sca-v3`) is a
/// payment abroad: `amount:`/`currency:` what is converted, `fee:` (same currency), `total:`
/// what leaves the account, `rate:` (exact decimal), `receive:`/`receive_currency:` what the
/// payee gets, `quote:` the quote's id, then the payee as in version 2. Version 4
/// (`bp-sca-v4`) is accepting a loan: `loan:` its id, `amount:`/`currency:` the principal,
/// `account:` the account it is paid into and repaid from, `term_months:`, `rate:` (the annual
/// rate, exact decimal), `instalment:` (monthly; the last absorbs the rounding), `interest:`
/// (the whole schedule's), `fee:` (taken at disbursement), `total:` (principal, interest and
/// fee: all the customer pays). A device shows every line.
pub fn signing_message(challenge: &ScaChallenge) -> String {
    let version = match challenge.purpose {
        ChallengePurpose::ExternalPayment { .. } => "bp-sca-v2",
        ChallengePurpose::InternationalPayment { .. } => "bp-sca-v3",
        ChallengePurpose::LoanAcceptance { .. } => "bp-sca-v4",
        _ => "bp-sca-v1",
    };
    let mut out = format!("{version}\n");
    let _ = writeln!(out, "challenge:{}", challenge.id);
    match &challenge.purpose {
        ChallengePurpose::Payment { transfer_id, amount, payee } => {
            let _ = writeln!(out, "purpose:payment");
            let _ = writeln!(out, "transfer:{transfer_id}");
            let _ = writeln!(out, "amount:{}", amount.to_decimal_string());
            let _ = writeln!(out, "currency:{}", amount.currency());
            let _ = writeln!(out, "payee:{payee}");
        }
        ChallengePurpose::ExternalPayment { transfer_id, amount, payee } => {
            let _ = writeln!(out, "purpose:external_payment");
            let _ = writeln!(out, "transfer:{transfer_id}");
            let _ = writeln!(out, "amount:{}", amount.to_decimal_string());
            let _ = writeln!(out, "currency:{}", amount.currency());
            let _ = writeln!(out, "iban:{}", payee.iban.as_str());
            let _ = writeln!(out, "name:{}", payee.name);
            let _ = writeln!(out, "bic:{}", payee.bic.as_ref().map_or("", |b| b.as_str()));
        }
        ChallengePurpose::InternationalPayment { transfer_id, quote, payee } => {
            let _ = writeln!(out, "purpose:international_payment");
            let _ = writeln!(out, "transfer:{transfer_id}");
            let _ = writeln!(out, "amount:{}", quote.source.to_decimal_string());
            let _ = writeln!(out, "currency:{}", quote.source.currency());
            let _ = writeln!(out, "fee:{}", quote.fee.to_decimal_string());
            let _ = writeln!(out, "total:{}", quote.debit.to_decimal_string());
            let _ = writeln!(out, "rate:{}", quote.rate);
            let _ = writeln!(out, "receive:{}", quote.target.to_decimal_string());
            let _ = writeln!(out, "receive_currency:{}", quote.target.currency());
            let _ = writeln!(out, "quote:{}", quote.id);
            let _ = writeln!(out, "iban:{}", payee.iban.as_str());
            let _ = writeln!(out, "name:{}", payee.name);
            let _ = writeln!(out, "bic:{}", payee.bic.as_ref().map_or("", |b| b.as_str()));
        }
        ChallengePurpose::LoanAcceptance { loan_id, amount, account, offer } => {
            let _ = writeln!(out, "purpose:loan_acceptance");
            let _ = writeln!(out, "loan:{loan_id}");
            let _ = writeln!(out, "amount:{}", amount.to_decimal_string());
            let _ = writeln!(out, "currency:{}", amount.currency());
            let _ = writeln!(out, "account:{account}");
            let _ = writeln!(out, "term_months:{}", offer.term_months);
            let _ = writeln!(out, "rate:{}", offer.annual_rate);
            let _ = writeln!(out, "instalment:{}", offer.instalment.to_decimal_string());
            let _ = writeln!(out, "interest:{}", offer.total_interest.to_decimal_string());
            let _ = writeln!(out, "fee:{}", offer.fee.to_decimal_string());
            let total = amount.checked_add(offer.total_interest).and_then(|t| t.checked_add(offer.fee));
            let _ = writeln!(out, "total:{}", total.map_or_else(|_| String::new(), |t| t.to_decimal_string()));
        }
        ChallengePurpose::Beneficiary { beneficiary_id, payee } => {
            let _ = writeln!(out, "purpose:trust_beneficiary");
            let _ = writeln!(out, "beneficiary:{beneficiary_id}");
            let _ = writeln!(out, "payee:{payee}");
        }
        ChallengePurpose::Device { device_id, name, public_key } => {
            let _ = writeln!(out, "purpose:register_device");
            let _ = writeln!(out, "device:{device_id}");
            // A display name has no control characters (`limits::display_name`): one line.
            let _ = writeln!(out, "name:{name}");
            let _ = writeln!(out, "key:{public_key}");
        }
    }
    let _ = write!(out, "nonce:{}", challenge.nonce);
    out
}

/// The text a device signs to prove it holds the private key it registers.
pub fn device_registration_message(customer: CustomerId, public_key_b64: &str) -> String {
    format!("bp-device-registration-v1\ncustomer:{customer}\nkey:{public_key_b64}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_number::AccountNumber;
    use crate::ids::{CustomerId, TransferId};
    use crate::money::Currency;

    fn config() -> ScaRules {
        ScaRules::default()
    }

    #[test]
    fn exemptions_in_rule_order() {
        let c = config();
        let s = SecurityState::default();
        let small = Money::new(1_000, Currency::EUR);
        let large = Money::new(500_000, Currency::EUR);
        assert_eq!(exemption(&c, PayeeRelation::OwnAccount, &large, &s), Some(Exemption::OwnAccounts));
        let linked = PayeeRelation::TrustedBeneficiary(Trust::Linked);
        let by_totp = PayeeRelation::TrustedBeneficiary(Trust::Totp);
        assert_eq!(exemption(&c, linked, &large, &s), Some(Exemption::TrustedBeneficiary));
        // Trusted by TOTP: exempt up to the TOTP limit (500), then low value or nothing.
        assert_eq!(exemption(&c, by_totp, &Money::new(50_000, Currency::EUR), &s), Some(Exemption::TrustedBeneficiary));
        assert_eq!(exemption(&c, by_totp, &Money::new(50_001, Currency::EUR), &s), None);
        assert_eq!(exemption(&c, by_totp, &small, &s), Some(Exemption::TrustedBeneficiary));
        assert_eq!(Trust::of(None), Trust::Totp, "trusted before methods were recorded counts as TOTP");
        assert_eq!(exemption(&c, PayeeRelation::Other, &small, &s), Some(Exemption::LowValue));
        assert_eq!(exemption(&c, PayeeRelation::Other, &large, &s), None);
        // A rule turned off leaves the next one to decide.
        let off = ScaRules { exempt_own_accounts: false, exempt_trusted_beneficiaries: false, ..c.clone() };
        assert_eq!(exemption(&off, PayeeRelation::OwnAccount, &small, &s), Some(Exemption::LowValue));
        assert_eq!(exemption(&off, linked, &large, &s), None);
    }

    #[test]
    fn low_value_is_below_30_within_100_and_5_payments() {
        let c = config();
        let mut s = SecurityState::default();
        assert!(!low_value_allows(&c, &Money::new(3_000, Currency::EUR), &s), "30.00 is not below 30");
        assert!(low_value_allows(&c, &Money::new(2_999, Currency::EUR), &s));
        // Cumulative: 3 × 29.99 = 89.97; a fourth of 29.99 would pass 100.
        for _ in 0..3 {
            count_low_value(&c, &mut s, &Money::new(2_999, Currency::EUR));
        }
        assert!(!low_value_allows(&c, &Money::new(2_999, Currency::EUR), &s));
        assert!(low_value_allows(&c, &Money::new(1_003, Currency::EUR), &s), "exactly 100.00 is within");
        // Count: five small payments, then no more.
        let mut s = SecurityState::default();
        for _ in 0..5 {
            assert!(low_value_allows(&c, &Money::new(100, Currency::EUR), &s));
            count_low_value(&c, &mut s, &Money::new(100, Currency::EUR));
        }
        assert!(!low_value_allows(&c, &Money::new(100, Currency::EUR), &s));
        reset_low_value(&mut s);
        assert!(low_value_allows(&c, &Money::new(100, Currency::EUR), &s));
        // Other currencies count by their euro equivalent (RTS art. 16 says €30 and €100), and
        // not at all without a rate: JPY has no minor unit.
        assert!(!low_value_allows(&c, &Money::new(29, Currency::JPY), &SecurityState::default()), "no JPY rate");
        let yen = ScaRules {
            eur_rates: BTreeMap::from([(Currency::JPY, EurRate::parse("160").expect("rate"))]),
            ..c.clone()
        };
        assert!(low_value_allows(&yen, &Money::new(4_798, Currency::JPY), &SecurityState::default()), "29.99 EUR");
        assert!(!low_value_allows(&yen, &Money::new(4_799, Currency::JPY), &SecurityState::default()), "30.00 EUR");
        // Totals add up across currencies in euro: 29.99 EUR and 32.98 USD (29.99 EUR), …
        let mut s = SecurityState::default();
        count_low_value(&c, &mut s, &Money::new(2_999, Currency::EUR));
        count_low_value(&c, &mut s, &Money::new(3_298, Currency::USD));
        assert_eq!(s.low_value_total_minor.get(&Currency::EUR), Some(&(2_999 + 2_999)), "kept in euro");
        assert!(low_value_allows(&c, &Money::new(2_999, Currency::EUR), &s));
        count_low_value(&c, &mut s, &Money::new(2_999, Currency::EUR));
        assert!(low_value_allows(&c, &Money::new(1_100, Currency::USD), &s), "… 89.97 + 10.00 EUR is within 100");
        assert!(!low_value_allows(&c, &Money::new(1_104, Currency::USD), &s), "89.97 + 10.04 EUR is not");
        // A total an earlier version kept per currency is converted.
        let legacy = SecurityState {
            low_value_total_minor: BTreeMap::from([(Currency::USD, 8_800)]),
            ..SecurityState::default()
        };
        assert!(!low_value_allows(&c, &Money::new(2_001, Currency::EUR), &legacy), "80.00 + 20.01 EUR");
        assert!(low_value_allows(&c, &Money::new(2_000, Currency::EUR), &legacy));
    }

    #[test]
    fn answers_by_device_or_by_totp_within_its_limit() {
        let rules = ScaRules::default();
        let payee = AccountNumber::from_serial(1).expect("serial");
        let pay = |minor| ChallengePurpose::Payment {
            transfer_id: TransferId::new_v7(),
            amount: Money::new(minor, Currency::EUR),
            payee,
        };
        let both = Factors { device: true, totp: true };
        let totp = Factors { device: false, totp: true };
        assert_eq!(answer_methods(&rules, both, &pay(100)), vec![ScaMethod::DeviceSignature]);
        assert_eq!(answer_methods(&rules, totp, &pay(50_000)), vec![ScaMethod::Totp], "500.00 is within");
        assert!(answer_methods(&rules, totp, &pay(50_001)).is_empty(), "above it a device is needed");
        assert!(answer_methods(&rules, Factors::default(), &pay(100)).is_empty());
        let off = ScaRules { totp_payment_amount_max_units: 0, ..ScaRules::default() };
        assert!(answer_methods(&off, totp, &pay(1)).is_empty());
        let trust = ChallengePurpose::Beneficiary { beneficiary_id: crate::ids::BeneficiaryId::new_v7(), payee };
        assert_eq!(answer_methods(&off, totp, &trust), vec![ScaMethod::Totp], "trusting a payee by TOTP");
    }

    #[test]
    fn challenges_close_by_expiry_answer_or_failures() {
        let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("time");
        let payee = AccountNumber::from_serial(1).expect("serial");
        let transfer_id = TransferId::new_v7();
        let purpose = ChallengePurpose::Payment { transfer_id, amount: Money::new(100, Currency::EUR), payee };
        let mut c =
            new_challenge(CustomerId::new_v7(), purpose, "n".to_owned(), now, now + chrono::Duration::seconds(300));
        assert_eq!(c.id, challenge_id(transfer_id.as_uuid()), "found again from the transfer");
        assert_eq!(answerable(&c, now), Ok(()));
        assert_eq!(answerable(&c, now + chrono::Duration::seconds(300)), Err(Closed::Expired));
        c.state = ChallengeState::Failed;
        assert_eq!(answerable(&c, now), Err(Closed::Failed));
        c.state = ChallengeState::Answered { at: now, method: ScaMethod::Totp, device_id: None };
        assert_eq!(answerable(&c, now), Err(Closed::Answered));
    }

    fn challenge_for(purpose: ChallengePurpose) -> ScaChallenge {
        let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("time");
        let customer = CustomerId::from_uuid(Uuid::from_u128(1));
        new_challenge(customer, purpose, "n0nce".to_owned(), now, now)
    }

    #[test]
    fn version_1_texts_stay_byte_identical() {
        let transfer_id = TransferId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002));
        let payee = AccountNumber::from_serial(1).expect("serial");
        let amount = Money::new(12_345, Currency::EUR);
        let pay = challenge_for(ChallengePurpose::Payment { transfer_id, amount, payee });
        assert_eq!(
            signing_message(&pay),
            format!(
                "bp-sca-v1\nchallenge:{}\npurpose:payment\ntransfer:01900000-0000-7000-8000-000000000002\n\
                 amount:123.45\ncurrency:EUR\npayee:000000000195\nnonce:n0nce",
                pay.id
            )
        );
        let beneficiary_id = crate::ids::BeneficiaryId::from_uuid(Uuid::from_u128(3));
        let trust = challenge_for(ChallengePurpose::Beneficiary { beneficiary_id, payee });
        assert_eq!(
            signing_message(&trust),
            format!(
                "bp-sca-v1\nchallenge:{}\npurpose:trust_beneficiary\nbeneficiary:00000000-0000-0000-0000-000000000003\n\
                 payee:000000000195\nnonce:n0nce",
                trust.id
            )
        );
    }

    #[test]
    fn loan_acceptance_signs_the_whole_offer() {
        use crate::external::loan::LoanOffer;
        let loan_id = crate::ids::ServiceRecordId::from_uuid(Uuid::from_u128(5));
        let account = AccountNumber::from_serial(1).expect("serial");
        let offer = LoanOffer {
            annual_rate: crate::rate::Rate::parse("0.049").expect("rate"),
            fee: Money::new(1_200, Currency::EUR),
            term_months: 12,
            instalment: Money::new(10_267, Currency::EUR),
            total_interest: Money::new(3_209, Currency::EUR),
            expires_at: chrono::DateTime::from_timestamp(1_767_312_000, 0).expect("time"),
        };
        let amount = Money::new(120_000, Currency::EUR);
        let purpose = |amount, offer| ChallengePurpose::LoanAcceptance { loan_id, amount, account, offer };
        let c = challenge_for(purpose(amount, offer.clone()));
        assert_eq!(
            signing_message(&c),
            format!(
                "bp-sca-v4\nchallenge:{}\npurpose:loan_acceptance\nloan:00000000-0000-0000-0000-000000000005\n\
                 amount:1200.00\ncurrency:EUR\naccount:000000000195\nterm_months:12\nrate:0.049\n\
                 instalment:102.67\ninterest:32.09\nfee:12.00\ntotal:1244.09\nnonce:n0nce",
                c.id
            )
        );
        // Any change of the offer or the principal changes the text.
        for changed in [
            purpose(Money::new(120_001, Currency::EUR), offer.clone()),
            purpose(
                amount,
                LoanOffer { annual_rate: crate::rate::Rate::parse("0.05").expect("rate"), ..offer.clone() },
            ),
            purpose(amount, LoanOffer { fee: Money::new(1_201, Currency::EUR), ..offer.clone() }),
            purpose(amount, LoanOffer { term_months: 24, ..offer.clone() }),
        ] {
            assert_ne!(signing_message(&challenge_for(changed)), signing_message(&c));
        }
        // TOTP answers it only within the TOTP limit (500 EUR by default), as for a payment.
        let totp = Factors { device: false, totp: true };
        assert_eq!(answer_methods(&config(), totp, &c.purpose), Vec::<ScaMethod>::new());
        let small = challenge_for(purpose(Money::new(50_000, Currency::EUR), offer));
        assert_eq!(answer_methods(&config(), totp, &small.purpose), vec![ScaMethod::Totp]);
        assert_eq!(challenge_id(loan_id.as_uuid()), c.id, "one challenge per loan");
    }

    #[test]
    fn external_payments_sign_amount_currency_iban_and_name() {
        let transfer_id = TransferId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002));
        let payee =
            ExternalAccount::parse("DE89370400440532013000", "Zoë: O'Brien & Co", Some("COBADEFFXXX")).expect("payee");
        let amount = Money::new(12_345, Currency::EUR);
        let c = challenge_for(ChallengePurpose::ExternalPayment { transfer_id, amount, payee: payee.clone() });
        assert_eq!(
            signing_message(&c),
            format!(
                "bp-sca-v2\nchallenge:{}\npurpose:external_payment\ntransfer:01900000-0000-7000-8000-000000000002\n\
                 amount:123.45\ncurrency:EUR\niban:DE89370400440532013000\nname:Zoë: O'Brien & Co\n\
                 bic:COBADEFFXXX\nnonce:n0nce",
                c.id
            )
        );
        assert_eq!(answer_methods(&config(), Factors { device: false, totp: true }, &c.purpose), vec![ScaMethod::Totp]);
        let transfer = Transfer {
            id: transfer_id,
            kind: crate::transfer::TransferKind::Interbank,
            debit_account: crate::ids::AccountId::new_v7(),
            credit_account: crate::ids::AccountId::new_v7(),
            amount,
            reference: None,
            state: crate::transfer::TransferState::Pending,
            void_reason: None,
            hold_until: None,
            created_at: c.created_at,
            finished_at: None,
        };
        assert!(links_external(&c, &transfer, &payee));
        // Any change of what was signed breaks the link, and changes the text.
        let other = |iban: &str, name: &str, bic: Option<&str>| ExternalAccount::parse(iban, name, bic).expect("payee");
        for changed in [
            other("GB82WEST12345698765432", "Zoë: O'Brien & Co", Some("COBADEFFXXX")),
            other("DE89370400440532013000", "Zoe: O'Brien & Co", Some("COBADEFFXXX")),
            other("DE89370400440532013000", "Zoë: O'Brien & Co", None),
        ] {
            assert!(!links_external(&c, &transfer, &changed), "{changed:?}");
            let forged = challenge_for(ChallengePurpose::ExternalPayment { transfer_id, amount, payee: changed });
            assert_ne!(signing_message(&forged), signing_message(&c));
        }
        for amount in [Money::new(12_346, Currency::EUR), Money::new(12_345, Currency::USD)] {
            assert!(!links_external(&c, &Transfer { amount, ..transfer.clone() }, &payee), "{amount:?}");
        }
        assert!(!links_external(&c, &Transfer { id: TransferId::new_v7(), ..transfer.clone() }, &payee));
        // An internal payment's challenge never links to an external payee, nor the reverse.
        let internal = challenge_for(ChallengePurpose::Payment {
            transfer_id,
            amount,
            payee: AccountNumber::from_serial(1).expect("serial"),
        });
        assert!(!links_external(&internal, &transfer, &payee));
        assert!(!links(&c, &transfer, AccountNumber::from_serial(1).expect("serial")));
    }
}
