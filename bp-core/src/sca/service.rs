//! [`Sca`]: strong customer authentication applied to a customer's records — challenges opened
//! and answered (each answer spent once), wrong answers counted towards the challenge's and the
//! customer's limits, the second factor of a sign-in checked, device keys registered and
//! removed, and every security event written to the audit log.

use std::sync::Arc;

use crate::Timestamp;
use crate::clock::Clock;
use crate::error::StoreError;
use crate::hooks::{Hooks, NoHooks};
use crate::ids::{ChallengeId, CustomerId, DeviceId};
use crate::random::{OsRandomness, Randomness, token};
use crate::security::{
    AuditEntry, AuditKind, ChallengeAnswer, ChallengePurpose, Device, ScaChallenge, ScaMethod, SecurityState,
    SecurityStore,
};

use super::factors::{DEVICE_KEY_LEN, DeviceKey, totp_accept, unb64};
use super::lockout::{self, LockoutRules};
use super::{
    Closed, Factors, ScaAnswer, ScaError, ScaRules, answer_methods, answerable, challenge_id,
    device_registration_message, limits, new_challenge, recently_signed_in, reset_low_value, signing_message,
};

/// Per-customer locks (stripes) serialising the read-modify-write of a customer's security
/// state within this process.
const CUSTOMER_LOCKS_LEN: usize = 256;
/// Random bytes of a challenge's nonce.
const NONCE_BYTES: usize = 16;

/// A sign-in's second factor, as the customer gave it.
#[derive(Clone, Copy, Debug)]
pub enum SecondFactor<'a> {
    /// A TOTP code.
    Totp {
        /// The code as typed.
        code: &'a str,
    },
    /// A device key's signature of the sign-in's text.
    Device {
        /// The device.
        device_id: DeviceId,
        /// What it signed (the sign-in's own text).
        message: &'a str,
        /// The signature, base64url.
        signature: &'a str,
    },
}

/// A second factor that passed: how, and the TOTP step spent (so that the code is not taken
/// twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The method.
    pub method: ScaMethod,
    /// The TOTP time step, for a TOTP code.
    pub totp_step: Option<u64>,
}

/// A device key waiting for the challenge that registers it ([`Sca::confirm_device`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceChallenge {
    /// The id the device will have.
    pub device_id: DeviceId,
    /// The challenge to answer.
    pub challenge: ScaChallenge,
    /// How it may be answered.
    pub methods: Vec<ScaMethod>,
}

/// The bytes of a device key given as base64url: [`DEVICE_KEY_LEN`] of them.
fn device_key_bytes(public_key_b64: &str) -> Result<Vec<u8>, ScaError> {
    unb64(public_key_b64)
        .filter(|k| k.len() == DEVICE_KEY_LEN)
        .ok_or_else(|| ScaError::Invalid("public_key must be a base64url SEC1 uncompressed P-256 key".into()))
}

/// Holds one customer's lock (see [`Sca::lock`]).
#[derive(Debug)]
pub struct CustomerGuard<'a>(#[allow(dead_code)] tokio::sync::MutexGuard<'a, ()>);

/// Strong customer authentication over a [`SecurityStore`]. Cloning shares it.
///
/// Methods that change a customer's security state say "under the customer's lock": the caller
/// holds [`Sca::lock`] for that customer around them (and around any read of the state they
/// decide on), so that two requests of one customer do not lose each other's counts.
#[derive(Clone)]
pub struct Sca {
    security: Arc<dyn SecurityStore>,
    clock: Arc<dyn Clock>,
    rules: ScaRules,
    lockout: LockoutRules,
    random: Arc<dyn Randomness>,
    hooks: Arc<dyn Hooks>,
    locks: Arc<[tokio::sync::Mutex<()>]>,
}

impl std::fmt::Debug for Sca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sca").field("rules", &self.rules).field("lockout", &self.lockout).finish_non_exhaustive()
    }
}

impl Sca {
    /// The service over `security`, reading the time from `clock`, with the operating system's
    /// randomness and no hooks.
    pub fn new(
        security: Arc<dyn SecurityStore>,
        clock: Arc<dyn Clock>,
        rules: ScaRules,
        lockout: LockoutRules,
    ) -> Self {
        Self {
            security,
            clock,
            rules,
            lockout,
            random: Arc::new(OsRandomness),
            hooks: Arc::new(NoHooks),
            locks: (0..CUSTOMER_LOCKS_LEN).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The same, drawing nonces from `random`.
    pub fn with_randomness(mut self, random: Arc<dyn Randomness>) -> Self {
        self.random = random;
        self
    }

    /// The same, telling `hooks` what it did.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// The rules.
    pub fn rules(&self) -> &ScaRules {
        &self.rules
    }

    /// The security store.
    pub fn store(&self) -> &Arc<dyn SecurityStore> {
        &self.security
    }

    /// The hooks.
    pub(crate) fn hooks(&self) -> &Arc<dyn Hooks> {
        &self.hooks
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn now_s(&self) -> u64 {
        u64::try_from(self.now().timestamp()).unwrap_or(0)
    }

    /// The lock serialising changes of `customer`'s security state in this process.
    pub async fn lock(&self, customer: CustomerId) -> CustomerGuard<'_> {
        let stripe = usize::from(customer.as_uuid().as_bytes()[15]) % self.locks.len();
        CustomerGuard(self.locks[stripe].lock().await)
    }

    /// Appends a security event to the audit log; `detail` must be a JSON object without
    /// secrets. A failure to write it fails the caller (no unaudited security event).
    pub async fn audit(
        &self,
        kind: AuditKind,
        customer: Option<CustomerId>,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let detail = match detail {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let mut entry = AuditEntry { position: 0, at: self.now(), kind, customer_id: customer, detail };
        entry.position = self.security.append_audit(entry.clone()).await?;
        self.hooks.audited(&entry);
        Ok(())
    }

    /// The possession factors `customer` has enrolled.
    pub async fn factors(&self, customer: CustomerId) -> Result<Factors, StoreError> {
        let device = self.security.devices_of(customer).await?.iter().any(|d| d.revoked_at.is_none());
        let totp = self.security.credentials(customer).await?.is_some_and(|c| c.totp_secret.is_some());
        Ok(Factors { device, totp })
    }

    /// The ways `customer` may answer a challenge for `purpose` ([`answer_methods`]).
    pub async fn methods(
        &self,
        customer: CustomerId,
        purpose: &ChallengePurpose,
    ) -> Result<Vec<ScaMethod>, StoreError> {
        Ok(answer_methods(&self.rules, self.factors(customer).await?, purpose))
    }

    /// Opens a challenge of `customer` for `purpose`, answerable until `expires_at` (or
    /// replaces the open one with the same id), and says how it may be answered.
    pub async fn open(
        &self,
        customer: CustomerId,
        purpose: ChallengePurpose,
        expires_at: Timestamp,
    ) -> Result<(ScaChallenge, Vec<ScaMethod>), StoreError> {
        let challenge =
            new_challenge(customer, purpose, token(self.random.as_ref(), NONCE_BYTES), self.now(), expires_at);
        self.security.put_challenge(challenge.clone()).await?;
        let methods = self.methods(customer, &challenge.purpose).await?;
        Ok((challenge, methods))
    }

    /// `customer`'s challenge `id`; another customer's is not found.
    pub async fn challenge_of(&self, customer: CustomerId, id: ChallengeId) -> Result<ScaChallenge, ScaError> {
        self.security.challenge(id).await?.filter(|c| c.customer_id == customer).ok_or(ScaError::NotFound("challenge"))
    }

    /// `customer`'s security state, unless they are locked out.
    pub async fn unlocked(&self, customer: CustomerId) -> Result<SecurityState, ScaError> {
        let state = self.security.security_state(customer).await?;
        match lockout::locked_for_s(&state, self.now()) {
            Some(retry_after_s) => Err(ScaError::LockedOut { retry_after_s }),
            None => Ok(state),
        }
    }

    /// Checks `answer` to `challenge` and, when right, spends it: the challenge is answered,
    /// the failure count and the low-value counters start again. A wrong answer counts towards
    /// the challenge's and the customer's failure limits. Under the customer's lock.
    pub async fn answer(&self, challenge: &ScaChallenge, answer: &ScaAnswer) -> Result<ScaChallenge, ScaError> {
        let customer = challenge.customer_id;
        let state = self.unlocked(customer).await?;
        if answer.challenge_id() != challenge.id {
            return Err(ScaError::WrongChallenge);
        }
        answerable(challenge, self.now())?;
        let accepted = self.methods(customer, &challenge.purpose).await?;
        let verdict = match answer {
            ScaAnswer::DeviceSignature { device_id, signature, .. }
                if accepted.contains(&ScaMethod::DeviceSignature) =>
            {
                let message = signing_message(challenge);
                let signs = self.device_signs(customer, *device_id, &message, signature).await?;
                signs
                    .then_some(Verified { method: ScaMethod::DeviceSignature, totp_step: None })
                    .map(|v| (v, Some(*device_id)))
            }
            ScaAnswer::Totp { code, .. } if accepted.contains(&ScaMethod::Totp) => {
                let step = self.totp_matches(customer, code, state.totp_last_step).await?;
                step.map(|s| (Verified { method: ScaMethod::Totp, totp_step: Some(s) }, None))
            }
            _ => return Err(ScaError::MethodNotAccepted(accepted)),
        };
        let Some((verified, device_id)) = verdict else {
            self.security.fail_challenge(challenge.id, self.rules.challenge_failures_max).await?;
            self.record_failure(customer, AuditKind::ChallengeFailed).await?;
            return Err(ScaError::Failed);
        };
        match self.security.answer_challenge(challenge.id, verified.method, device_id, self.now()).await? {
            ChallengeAnswer::Accepted(answered) => {
                let mut state = self.security.security_state(customer).await?;
                state.failures = 0;
                reset_low_value(&mut state);
                if let Some(step) = verified.totp_step {
                    state.totp_last_step = Some(step);
                }
                self.security.put_security_state(customer, state).await?;
                let detail = serde_json::json!({ "challenge": challenge.id.to_string(), "method": verified.method });
                self.audit(AuditKind::ChallengeAnswered, Some(customer), detail).await?;
                Ok(answered)
            }
            ChallengeAnswer::Refused(_) => Err(Closed::Answered.into()),
            ChallengeAnswer::Unknown => Err(ScaError::NotFound("challenge")),
        }
    }

    /// Whether `factor` is `customer`'s second factor now; `None` when it is wrong (count it
    /// with [`Sca::record_failure`]). `state` is the customer's state read under their lock
    /// ([`Sca::unlocked`]). Nothing is written: a sign-in that passes calls
    /// [`Sca::signed_in`].
    pub async fn second_factor(
        &self,
        customer: CustomerId,
        factor: SecondFactor<'_>,
        state: &SecurityState,
    ) -> Result<Option<Verified>, StoreError> {
        match factor {
            SecondFactor::Totp { code } => {
                let step = self.totp_matches(customer, code, state.totp_last_step).await?;
                Ok(step.map(|s| Verified { method: ScaMethod::Totp, totp_step: Some(s) }))
            }
            SecondFactor::Device { device_id, message, signature } => {
                let signs = self.device_signs(customer, device_id, message, signature).await?;
                Ok(signs.then_some(Verified { method: ScaMethod::DeviceSignature, totp_step: None }))
            }
        }
    }

    /// A sign-in with both factors passed: failures and lockouts are forgotten, the low-value
    /// counters start again (a sign-in is an SCA), the TOTP step is spent, and it is audited
    /// with `detail`. Under the customer's lock.
    pub async fn signed_in(
        &self,
        customer: CustomerId,
        verified: Verified,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut state = self.security.security_state(customer).await?;
        lockout::signed_in(&mut state);
        if let Some(step) = verified.totp_step {
            state.totp_last_step = Some(step);
        }
        self.security.put_security_state(customer, state).await?;
        self.audit(AuditKind::LoginSucceeded, Some(customer), detail).await
    }

    /// Counts a failed password, second factor or challenge answer (audited as `what`), and
    /// locks the customer out after `failures_max` in a row, for longer each time. Under the
    /// customer's lock.
    pub async fn record_failure(&self, customer: CustomerId, what: AuditKind) -> Result<(), StoreError> {
        let mut state = self.security.security_state(customer).await?;
        let failure = lockout::count_failure(&mut state, &self.lockout, self.now());
        self.audit(what, Some(customer), serde_json::json!({ "failures": failure.failures })).await?;
        if let Some(lock_s) = failure.locked_for_s {
            self.audit(AuditKind::LockedOut, Some(customer), serde_json::json!({ "lock_s": lock_s })).await?;
        }
        self.security.put_security_state(customer, state).await
    }

    /// Begins registering a device key of `customer`: `name` (trimmed, bounded), `public_key_b64`
    /// (SEC1 uncompressed P-256, base64url) and `proof_b64`, the key's signature of
    /// [`device_registration_message`] (proof that the caller holds the private key). The key is
    /// added only once the challenge returned is answered ([`Sca::confirm_device`]): by a device
    /// the customer has already, or, for a first device, by a TOTP code — and then only by a
    /// session that signed in with both factors within `recent_sign_in_max_age_s`
    /// (`signed_in_at`), so that a stolen session cannot register the thief's key. At most
    /// [`DEVICES_MAX`](crate::security::DEVICES_MAX) at a time, each key once.
    pub async fn begin_device_registration(
        &self,
        customer: CustomerId,
        name: &str,
        public_key_b64: &str,
        proof_b64: &str,
        signed_in_at: Option<Timestamp>,
    ) -> Result<DeviceChallenge, ScaError> {
        let name = limits::display_name(name)?;
        let key_bytes = device_key_bytes(public_key_b64)?;
        let key = DeviceKey::from_sec1(&key_bytes)
            .ok_or_else(|| ScaError::Invalid("public_key is not a point of P-256".into()))?;
        let proof = unb64(proof_b64).ok_or_else(|| ScaError::Invalid("proof must be base64url".into()))?;
        if !key.verifies(device_registration_message(customer, public_key_b64).as_bytes(), &proof) {
            return Err(ScaError::Invalid("proof is not the key's signature of the registration message".into()));
        }
        let devices = self.security.devices_of(customer).await?;
        limits::may_add_device(&devices, &key_bytes)?;
        if !devices.iter().any(|d| d.revoked_at.is_none()) {
            recently_signed_in(&self.rules, signed_in_at, self.now())?;
        }
        let device_id = DeviceId::new_v7();
        let purpose = ChallengePurpose::Device { device_id, name, public_key: public_key_b64.to_owned() };
        let (challenge, methods) = self.open(customer, purpose, self.now() + self.rules.challenge_ttl()).await?;
        Ok(DeviceChallenge { device_id, challenge, methods })
    }

    /// Registers `customer`'s device `device_id` with `answer` to the challenge its registration
    /// opened. Audited (and so announced on the customer's event stream).
    pub async fn confirm_device(
        &self,
        customer: CustomerId,
        device_id: DeviceId,
        answer: &ScaAnswer,
    ) -> Result<Device, ScaError> {
        let challenge = self.challenge_of(customer, challenge_id(device_id.as_uuid())).await?;
        let ChallengePurpose::Device { name, public_key, .. } = &challenge.purpose else {
            return Err(ScaError::NotFound("device"));
        };
        let key_bytes = device_key_bytes(public_key)?;
        let _guard = self.lock(customer).await;
        self.answer(&challenge, answer).await?;
        // Checked again: another registration may have finished meanwhile.
        limits::may_add_device(&self.security.devices_of(customer).await?, &key_bytes)?;
        let device = Device {
            id: device_id,
            customer_id: customer,
            name: name.clone(),
            public_key: key_bytes,
            created_at: self.now(),
            revoked_at: None,
        };
        self.security.add_device(device.clone()).await?;
        self.audit(AuditKind::DeviceAdded, Some(customer), serde_json::json!({ "device": device.id.to_string() }))
            .await?;
        Ok(device)
    }

    /// Removes `customer`'s device `id`: it answers no challenge from now on. Needs a sign-in
    /// with both factors within `recent_sign_in_max_age_s` (`signed_in_at`). Audited.
    pub async fn remove_device(
        &self,
        customer: CustomerId,
        id: DeviceId,
        signed_in_at: Option<Timestamp>,
    ) -> Result<(), ScaError> {
        recently_signed_in(&self.rules, signed_in_at, self.now())?;
        if !self.security.revoke_device(customer, id, self.now()).await? {
            return Err(ScaError::NotFound("device"));
        }
        self.audit(AuditKind::DeviceRemoved, Some(customer), serde_json::json!({ "device": id.to_string() })).await?;
        Ok(())
    }

    /// `customer`'s devices that are not removed, oldest first.
    pub async fn devices(&self, customer: CustomerId) -> Result<Vec<Device>, StoreError> {
        let mut devices = self.security.devices_of(customer).await?;
        devices.retain(|d| d.revoked_at.is_none());
        Ok(devices)
    }

    /// Whether `customer`'s unremoved device `device_id` signed `message`.
    async fn device_signs(
        &self,
        customer: CustomerId,
        device_id: DeviceId,
        message: &str,
        signature_b64: &str,
    ) -> Result<bool, StoreError> {
        let device = self.security.device(device_id).await?;
        Ok(device.filter(|d| d.customer_id == customer && d.revoked_at.is_none()).is_some_and(|d| {
            DeviceKey::from_sec1(&d.public_key).is_some_and(|key| key.verifies_b64(message.as_bytes(), signature_b64))
        }))
    }

    /// The TOTP step of `code` when it is `customer`'s code now and not spent.
    async fn totp_matches(
        &self,
        customer: CustomerId,
        code: &str,
        last_step: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let secret = self.security.credentials(customer).await?.and_then(|c| c.totp_secret);
        Ok(secret.and_then(|s| totp_accept(&s, code.trim(), self.now_s(), last_step)))
    }
}
