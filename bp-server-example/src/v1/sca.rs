//! Strong customer authentication of payments and beneficiaries in the server: which answers a
//! customer's challenge accepts (the rule is `bp_core::sca`, fed with what the store knows of
//! the customer), and checking an answer: a device key's signature of the challenge's exact text
//! (dynamic linking), or a TOTP code where the rules allow one. An answer is accepted once.

use bp_core::api::{ScaAnswer, signing_message};
use bp_core::ids::ChallengeId;
use bp_core::ids::CustomerId;
use bp_core::sca::{Factors, answer_methods};
use bp_core::security::{ChallengeAnswer, ChallengePurpose, ScaChallenge, ScaMethod};

use uuid::Uuid;

use crate::auth::crypto::{p256_public_key, p256_verify, totp_accept, unb64};
use crate::http::problem::ApiError;
use crate::state::AppState;

/// Namespace of challenge ids derived from what they authorize.
const CHALLENGE_NAMESPACE: Uuid = Uuid::from_u128(0x8b5e_0d44_7c19_4e02_a3f6_21d9_6c70_e418);

/// The challenge id of what it authorizes (a transfer or a beneficiary id).
pub fn challenge_id(of: &Uuid) -> ChallengeId {
    ChallengeId::from_uuid(Uuid::new_v5(&CHALLENGE_NAMESPACE, of.as_bytes()))
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
        return Ok(answer_methods(&state.config.sca, Factors { device: true, totp: false }, purpose));
    }
    let has_totp = state.security.credentials(customer).await?.is_some_and(|c| c.totp_secret.is_some());
    Ok(answer_methods(&state.config.sca, Factors { device: false, totp: has_totp }, purpose))
}

/// Checks `answer` to `challenge` and, when right, spends it. Wrong answers count towards the
/// challenge's and the customer's failure limits. Call under the customer's lock.
pub async fn answer(state: &AppState, challenge: &ScaChallenge, answer: &ScaAnswer) -> Result<ScaChallenge, ApiError> {
    let customer = challenge.customer_id;
    let mut security = state.security.security_state(customer).await?;
    state.auth.check_lock(&security)?;
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
                .and_then(|s| totp_accept(&s, code.trim(), state.auth.now_s(), security.totp_last_step))
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
        state.auth.record_failure(customer, bp_core::security::AuditKind::ChallengeFailed).await?;
        return Err(ApiError::ScaFailed);
    };
    match state.security.answer_challenge(challenge.id, method, device_id, state.now()).await? {
        ChallengeAnswer::Accepted(answered) => {
            security = state.security.security_state(customer).await?;
            security.failures = 0;
            bp_core::sca::reset_low_value(&mut security);
            if let Some(step) = step {
                security.totp_last_step = Some(step);
            }
            state.security.put_security_state(customer, security).await?;
            state
                .auth
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
