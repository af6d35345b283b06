//! Strong customer authentication of payments and beneficiaries: which payments are exempt
//! (own accounts, trusted beneficiaries, low value within cumulative limits), which answers a
//! challenge accepts, and checking an answer: a device key's signature of the challenge's exact
//! text (dynamic linking), or a TOTP code where the rules allow one. An answer is accepted once.

use bp_core::api::{Exemption, ScaAnswer, signing_message};
use bp_core::ids::CustomerId;
use bp_core::money::Money;
use bp_core::security::{ChallengeAnswer, ChallengePurpose, ScaChallenge, ScaMethod, SecurityState};

use crate::config::ScaConfig;
use crate::crypto::{p256_public_key, p256_verify, totp_accept, unb64};
use crate::problem::ApiError;
use crate::state::AppState;

/// `units` whole units of `amount`'s currency, in minor units.
fn units_minor(units: i64, amount: &Money) -> i64 {
    10i64.checked_pow(u32::from(amount.currency().exponent())).and_then(|f| f.checked_mul(units)).unwrap_or(i64::MAX)
}

/// Whether a payment of `amount` is exempt, in the order the rules are tried.
pub fn exemption(
    config: &ScaConfig,
    own_accounts: bool,
    trusted_beneficiary: bool,
    amount: &Money,
    state: &SecurityState,
) -> Option<Exemption> {
    if own_accounts && config.exempt_own_accounts {
        return Some(Exemption::OwnAccounts);
    }
    if trusted_beneficiary && config.exempt_trusted_beneficiaries {
        return Some(Exemption::TrustedBeneficiary);
    }
    if low_value_allows(config, amount, state) {
        return Some(Exemption::LowValue);
    }
    None
}

/// PSD2 RTS article 16: below the single-payment limit, and the payments since the last SCA,
/// this one included, stay within both the cumulative amount and the count (we apply both
/// limits; the regulation lets a bank choose either).
fn low_value_allows(config: &ScaConfig, amount: &Money, state: &SecurityState) -> bool {
    if config.low_value_amount_max_units <= 0 {
        return false;
    }
    let minor = amount.amount_minor();
    let total = state.low_value_total_minor.get(&amount.currency()).copied().unwrap_or(0);
    minor < units_minor(config.low_value_amount_max_units, amount)
        && total.checked_add(minor).is_some_and(|t| t <= units_minor(config.low_value_total_max_units, amount))
        && state.low_value_count < config.low_value_count_max
}

/// Counts a payment made under the low-value exemption.
pub fn count_low_value(state: &mut SecurityState, amount: &Money) {
    state.low_value_count = state.low_value_count.saturating_add(1);
    let total = state.low_value_total_minor.entry(amount.currency()).or_insert(0);
    *total = total.saturating_add(amount.amount_minor());
}

/// An SCA happened: the low-value counters start again.
pub fn reset_low_value(state: &mut SecurityState) {
    state.low_value_count = 0;
    state.low_value_total_minor.clear();
}

/// The ways `customer` may answer a challenge for `purpose`: a device signature when they have
/// a device; otherwise a TOTP code, for payments only up to the configured amount.
pub async fn methods(
    state: &AppState,
    customer: CustomerId,
    purpose: &ChallengePurpose,
) -> Result<Vec<ScaMethod>, ApiError> {
    let has_device = state.security.devices_of(customer).await?.iter().any(|d| d.revoked_at.is_none());
    if has_device {
        return Ok(vec![ScaMethod::DeviceSignature]);
    }
    let has_totp = state.security.credentials(customer).await?.is_some_and(|c| c.totp_secret.is_some());
    let totp_allowed = match purpose {
        ChallengePurpose::Payment { amount, .. } => {
            amount.amount_minor() <= units_minor(state.config.sca.totp_payment_amount_max_units, amount)
                && state.config.sca.totp_payment_amount_max_units > 0
        }
        ChallengePurpose::Beneficiary { .. } => true,
    };
    Ok(if has_totp && totp_allowed { vec![ScaMethod::Totp] } else { Vec::new() })
}

/// Checks `answer` to `challenge` and, when right, spends it. Wrong answers count towards the
/// challenge's and the customer's failure limits. Call under the customer's lock.
pub async fn answer(state: &AppState, challenge: &ScaChallenge, answer: &ScaAnswer) -> Result<ScaChallenge, ApiError> {
    let customer = challenge.customer_id;
    let mut security = state.security.security_state(customer).await?;
    state.check_lock(&security)?;
    if answer.challenge_id() != challenge.id {
        return Err(ApiError::Unprocessable("the answer is for another challenge".to_owned()));
    }
    match challenge.state {
        bp_core::security::ChallengeState::Open if challenge.expires_at > state.now() => {}
        bp_core::security::ChallengeState::Open => return Err(ApiError::ChallengeClosed("the challenge has expired")),
        bp_core::security::ChallengeState::Answered { .. } => {
            return Err(ApiError::ChallengeClosed("the challenge was already answered"));
        }
        bp_core::security::ChallengeState::Failed => {
            return Err(ApiError::ChallengeClosed("the challenge failed after too many wrong answers"));
        }
    }
    let allowed = methods(state, customer, &challenge.purpose).await?;
    let verdict: Option<(ScaMethod, Option<bp_core::ids::DeviceId>, Option<u64>)> = match answer {
        ScaAnswer::DeviceSignature { device_id, signature, .. } if allowed.contains(&ScaMethod::DeviceSignature) => {
            let device = state.security.device(*device_id).await?;
            let ok = device.filter(|d| d.customer_id == customer && d.revoked_at.is_none()).is_some_and(|d| {
                match (p256_public_key(&d.public_key), unb64(signature)) {
                    (Some(key), Some(sig)) => p256_verify(&key, signing_message(challenge).as_bytes(), &sig),
                    _ => false,
                }
            });
            ok.then_some((ScaMethod::DeviceSignature, Some(*device_id), None))
        }
        ScaAnswer::Totp { code, .. } if allowed.contains(&ScaMethod::Totp) => {
            let secret = state.security.credentials(customer).await?.and_then(|c| c.totp_secret);
            secret
                .and_then(|s| totp_accept(&s, code.trim(), state.now_s(), security.totp_last_step))
                .map(|step| (ScaMethod::Totp, None, Some(step)))
        }
        _ => {
            return Err(ApiError::Unprocessable(match allowed.first() {
                Some(ScaMethod::DeviceSignature) => "answer with a registered device's signature".to_owned(),
                Some(ScaMethod::Totp) => "answer with a TOTP code".to_owned(),
                None => "this payment needs a registered device key; register one first".to_owned(),
            }));
        }
    };
    let Some((method, device_id, step)) = verdict else {
        state.security.fail_challenge(challenge.id, state.config.sca.challenge_failures_max).await?;
        state.record_failure(customer, bp_core::security::AuditKind::ChallengeFailed).await?;
        return Err(ApiError::ScaFailed);
    };
    match state.security.answer_challenge(challenge.id, method, device_id, state.now()).await? {
        ChallengeAnswer::Accepted(answered) => {
            security = state.security.security_state(customer).await?;
            security.failures = 0;
            reset_low_value(&mut security);
            if let Some(step) = step {
                security.totp_last_step = Some(step);
            }
            state.security.put_security_state(customer, security).await?;
            state
                .audit(
                    bp_core::security::AuditKind::ChallengeAnswered,
                    Some(customer),
                    serde_json::json!({ "challenge": challenge.id.to_string(), "method": method }),
                )
                .await?;
            Ok(answered)
        }
        ChallengeAnswer::Refused(_) => Err(ApiError::ChallengeClosed("the challenge was already answered")),
        ChallengeAnswer::Unknown => Err(ApiError::NotFound("challenge")),
    }
}

#[cfg(test)]
mod tests {
    use bp_core::money::Currency;

    use super::*;

    fn config() -> ScaConfig {
        crate::config::Config::default().sca
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
}
