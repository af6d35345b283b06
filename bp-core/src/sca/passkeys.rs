//! Passkeys (WebAuthn credentials) as strong customer authentication sees them: who may register
//! one and when, their bound, their removal, and a sign-in with one. The WebAuthn ceremonies
//! themselves (options, attestation and assertion checks) are the server's verifier's: bp-core
//! keeps the records, the rules and the audit log, and takes the verifier's record of a
//! credential as opaque JSON.

use crate::Timestamp;
use crate::error::StoreErrorKind;
use crate::ids::{CustomerId, PasskeyId};
use crate::security::{AuditKind, Passkey};

use super::{Sca, ScaError, limits, lockout, recently_signed_in};

impl Sca {
    /// Whether `customer` may begin registering a passkey named `name` now: a sign-in with both
    /// factors at most `recent_sign_in_max_age_s` old (`signed_in_at`, else a step-up), so that a
    /// stolen session cannot add the thief's passkey, and fewer than
    /// [`PASSKEYS_MAX`](crate::security::PASSKEYS_MAX) passkeys. The name, trimmed.
    pub async fn may_begin_passkey(
        &self,
        customer: CustomerId,
        name: &str,
        signed_in_at: Option<Timestamp>,
    ) -> Result<String, ScaError> {
        let name = limits::display_name(name)?;
        recently_signed_in(self.rules(), signed_in_at, self.now())?;
        limits::passkey_room(&self.store().passkeys_of(customer).await?)?;
        Ok(name)
    }

    /// Registers `passkey` (its ceremony verified by the caller) for its customer: checked again
    /// against the bound and for a credential registered already (by anyone), stored, and
    /// audited (so announced on the customer's event stream).
    pub async fn add_passkey(&self, passkey: Passkey) -> Result<Passkey, ScaError> {
        let customer = passkey.customer_id;
        let _guard = self.lock(customer).await;
        limits::may_add_passkey(&self.store().passkeys_of(customer).await?, &passkey.credential_id)?;
        match self.store().add_passkey(passkey.clone()).await {
            Err(e) if e.kind() == StoreErrorKind::Conflict => {
                return Err(ScaError::Duplicate("this passkey is already registered"));
            }
            other => other?,
        }
        let detail = serde_json::json!({ "passkey": passkey.id.to_string() });
        self.audit(AuditKind::PasskeyAdded, Some(customer), detail).await?;
        Ok(passkey)
    }

    /// Removes `customer`'s passkey `id`: it signs no one in from now on. Needs a sign-in with
    /// both factors within `recent_sign_in_max_age_s` (`signed_in_at`). Audited.
    pub async fn remove_passkey(
        &self,
        customer: CustomerId,
        id: PasskeyId,
        signed_in_at: Option<Timestamp>,
    ) -> Result<(), ScaError> {
        recently_signed_in(self.rules(), signed_in_at, self.now())?;
        if !self.store().remove_passkey(customer, id).await? {
            return Err(ScaError::NotFound("passkey"));
        }
        self.audit(AuditKind::PasskeyRemoved, Some(customer), serde_json::json!({ "passkey": id.to_string() })).await?;
        Ok(())
    }

    /// `customer`'s passkeys, oldest first.
    pub async fn passkeys(&self, customer: CustomerId) -> Result<Vec<Passkey>, ScaError> {
        Ok(self.store().passkeys_of(customer).await?)
    }

    /// A sign-in with `customer`'s passkey `id`, whose assertion the verifier accepted with user
    /// verification (possession of the authenticator's key and the customer's biometric or PIN:
    /// two factors): failures and lockouts are forgotten, the low-value counters start again
    /// (a sign-in is an SCA), the passkey's use is recorded with the verifier's updated record
    /// `credential` (its signature counter), and it is audited with `detail`. Under the
    /// customer's lock; a locked-out customer is refused before this ([`Sca::unlocked`]).
    pub async fn signed_in_with_passkey(
        &self,
        customer: CustomerId,
        id: PasskeyId,
        credential: serde_json::Value,
        detail: serde_json::Value,
    ) -> Result<(), ScaError> {
        if !self.store().passkey_used(id, credential, self.now()).await? {
            return Err(ScaError::NotFound("passkey"));
        }
        let mut state = self.store().security_state(customer).await?;
        lockout::signed_in(&mut state);
        self.store().put_security_state(customer, state).await?;
        self.audit(AuditKind::LoginSucceeded, Some(customer), detail).await?;
        Ok(())
    }
}
