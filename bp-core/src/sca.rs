//! The rules of strong customer authentication (EU PSD2 RTS as defaults): which payments are
//! exempt — between a customer's own accounts, to a trusted beneficiary, or of low value within
//! cumulative limits since the last SCA — and which answers a challenge accepts. Pure functions,
//! written once; the server feeds them with its configuration and the customer's records.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::security::{ChallengePurpose, ScaMethod, SecurityState};

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
    /// Low-value payments below this many currency units need no SCA (0 turns it off)…
    pub low_value_amount_max_units: i64,
    /// …while the payments since the last SCA, this one included, stay within this cumulative
    /// amount (per currency)…
    pub low_value_total_max_units: i64,
    /// …and this number (RTS art. 16 lets a bank use either limit; both are applied).
    pub low_value_count_max: u32,
    /// A customer without a device key may answer a payment challenge with a TOTP code for
    /// amounts up to this many units (0: never).
    pub totp_payment_amount_max_units: i64,
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
        }
    }
}

impl ScaRules {
    /// How long a challenge made now is answerable.
    pub fn challenge_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.challenge_ttl_s).unwrap_or(i64::MAX / 1_000_000))
    }
}

/// `units` whole units of `amount`'s currency, in minor units (saturating).
fn units_minor(units: i64, amount: &Money) -> i64 {
    10i64.checked_pow(u32::from(amount.currency().exponent())).and_then(|f| f.checked_mul(units)).unwrap_or(i64::MAX)
}

/// Whether a payment of `amount` is exempt, and by which rule (tried in this order).
pub fn exemption(
    rules: &ScaRules,
    own_accounts: bool,
    trusted_beneficiary: bool,
    amount: &Money,
    state: &SecurityState,
) -> Option<Exemption> {
    if own_accounts && rules.exempt_own_accounts {
        return Some(Exemption::OwnAccounts);
    }
    if trusted_beneficiary && rules.exempt_trusted_beneficiaries {
        return Some(Exemption::TrustedBeneficiary);
    }
    if low_value_allows(rules, amount, state) {
        return Some(Exemption::LowValue);
    }
    None
}

/// Whether the low-value exemption covers a payment of `amount` given the counters since the
/// last SCA: below the single-payment limit, and within both the cumulative amount and the
/// count once this payment is added.
pub fn low_value_allows(rules: &ScaRules, amount: &Money, state: &SecurityState) -> bool {
    if rules.low_value_amount_max_units <= 0 {
        return false;
    }
    let minor = amount.amount_minor();
    let total = state.low_value_total_minor.get(&amount.currency()).copied().unwrap_or(0);
    minor < units_minor(rules.low_value_amount_max_units, amount)
        && total.checked_add(minor).is_some_and(|t| t <= units_minor(rules.low_value_total_max_units, amount))
        && state.low_value_count < rules.low_value_count_max
}

/// Counts a payment made under the low-value exemption.
pub fn count_low_value(state: &mut SecurityState, amount: &Money) {
    state.low_value_count = state.low_value_count.saturating_add(1);
    let total = state.low_value_total_minor.entry(amount.currency()).or_insert(0);
    *total = total.saturating_add(amount.amount_minor());
}

/// An SCA happened (a sign-in with two factors, an answered challenge): the low-value
/// counters start again.
pub fn reset_low_value(state: &mut SecurityState) {
    state.low_value_count = 0;
    state.low_value_total_minor.clear();
}

/// How a customer may answer a challenge for `purpose`: with a device key's signature when
/// they have a device; otherwise with a TOTP code, for a payment only up to the TOTP limit;
/// otherwise not at all (they must register a device).
pub fn answer_methods(
    rules: &ScaRules,
    has_device: bool,
    has_totp: bool,
    purpose: &ChallengePurpose,
) -> Vec<ScaMethod> {
    if has_device {
        return vec![ScaMethod::DeviceSignature];
    }
    let totp_allowed = match purpose {
        ChallengePurpose::Payment { amount, .. } => {
            rules.totp_payment_amount_max_units > 0
                && amount.amount_minor() <= units_minor(rules.totp_payment_amount_max_units, amount)
        }
        ChallengePurpose::Beneficiary { .. } => true,
    };
    if has_totp && totp_allowed { vec![ScaMethod::Totp] } else { Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_number::AccountNumber;
    use crate::ids::TransferId;
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
        assert_eq!(exemption(&c, true, true, &large, &s), Some(Exemption::OwnAccounts));
        assert_eq!(exemption(&c, false, true, &large, &s), Some(Exemption::TrustedBeneficiary));
        assert_eq!(exemption(&c, false, false, &small, &s), Some(Exemption::LowValue));
        assert_eq!(exemption(&c, false, false, &large, &s), None);
    }

    #[test]
    fn low_value_is_below_30_within_100_and_5_payments() {
        let c = config();
        let mut s = SecurityState::default();
        assert!(!low_value_allows(&c, &Money::new(3_000, Currency::EUR), &s), "30.00 is not below 30");
        assert!(low_value_allows(&c, &Money::new(2_999, Currency::EUR), &s));
        // Cumulative: 3 × 29.99 = 89.97; a fourth of 29.99 would pass 100.
        for _ in 0..3 {
            count_low_value(&mut s, &Money::new(2_999, Currency::EUR));
        }
        assert!(!low_value_allows(&c, &Money::new(2_999, Currency::EUR), &s));
        assert!(low_value_allows(&c, &Money::new(1_003, Currency::EUR), &s), "exactly 100.00 is within");
        // Count: five small payments, then no more.
        let mut s = SecurityState::default();
        for _ in 0..5 {
            assert!(low_value_allows(&c, &Money::new(100, Currency::EUR), &s));
            count_low_value(&mut s, &Money::new(100, Currency::EUR));
        }
        assert!(!low_value_allows(&c, &Money::new(100, Currency::EUR), &s));
        reset_low_value(&mut s);
        assert!(low_value_allows(&c, &Money::new(100, Currency::EUR), &s));
        // Currencies are counted in their own units: JPY has no minor unit.
        assert!(low_value_allows(&c, &Money::new(29, Currency::JPY), &SecurityState::default()));
        assert!(!low_value_allows(&c, &Money::new(30, Currency::JPY), &SecurityState::default()));
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
        assert_eq!(answer_methods(&rules, true, true, &pay(100)), vec![ScaMethod::DeviceSignature]);
        assert_eq!(answer_methods(&rules, false, true, &pay(50_000)), vec![ScaMethod::Totp], "500.00 is within");
        assert!(answer_methods(&rules, false, true, &pay(50_001)).is_empty(), "above it a device is needed");
        assert!(answer_methods(&rules, false, false, &pay(100)).is_empty());
        let off = ScaRules { totp_payment_amount_max_units: 0, ..ScaRules::default() };
        assert!(answer_methods(&off, false, true, &pay(1)).is_empty());
    }
}
