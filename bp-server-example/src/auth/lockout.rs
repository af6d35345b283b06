//! Lockout: a customer who fails `lockout.failures_max` password, second-factor or challenge
//! answers in a row is refused for `lockout.lock_s`, twice as long at each further lockout (up to
//! `lockout.lock_max_s`). Used by sign-in and by the answers to SCA challenges.

use bp_core::ids::CustomerId;
use bp_core::security::{AuditKind, SecurityState};
use chrono::Duration;

use crate::auth::Provider;
use crate::http::problem::ApiError;

impl Provider {
    /// Refuses while the customer is locked out.
    pub fn check_lock(&self, state: &SecurityState) -> Result<(), ApiError> {
        match state.locked_until {
            Some(until) if until > self.now() => {
                let retry_after_s = u64::try_from((until - self.now()).num_seconds().max(1)).unwrap_or(1);
                Err(ApiError::LockedOut { retry_after_s })
            }
            _ => Ok(()),
        }
    }

    /// Records one failed password, second-factor or challenge answer, locking the customer
    /// out after `failures_max` in a row, for longer each time. Call under the customer's lock.
    pub async fn record_failure(&self, customer: CustomerId, what: AuditKind) -> Result<(), ApiError> {
        let mut state = self.security.security_state(customer).await?;
        state.failures = state.failures.saturating_add(1);
        self.audit(what, Some(customer), serde_json::json!({ "failures": state.failures })).await?;
        if state.failures >= self.lockout.failures_max {
            let shift = state.lockouts.min(20);
            let lock_s = self.lockout.lock_s.saturating_mul(1u64 << shift).min(self.lockout.lock_max_s);
            state.locked_until =
                Some(self.now() + Duration::seconds(i64::try_from(lock_s).unwrap_or(i64::MAX / 1_000_000)));
            state.lockouts = state.lockouts.saturating_add(1);
            state.failures = 0;
            metrics::counter!("bp_lockouts_total").increment(1);
            self.audit(AuditKind::LockedOut, Some(customer), serde_json::json!({ "lock_s": lock_s })).await?;
        }
        self.security.put_security_state(customer, state).await?;
        Ok(())
    }
}
