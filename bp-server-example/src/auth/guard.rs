//! The security bookkeeping of sign-in: the per-minute budget of sign-in attempts per client
//! address, and the audit log as the provider writes it (through bp-core's `Sca`, whose hooks
//! wake the audit tail and log the event).

use std::net::IpAddr;
use std::sync::PoisonError;

use bp_core::ids::CustomerId;
use bp_core::security::AuditKind;

use crate::auth::Provider;
use crate::http::problem::ApiError;

/// Client addresses remembered at most before those of past minutes are forgotten.
const RATE_ADDRESSES_MAX: usize = 100_000;

impl Provider {
    /// Counts one attempt from `ip` against the per-minute sign-in budget.
    pub fn rate_limit(&self, ip: IpAddr) -> Result<(), ApiError> {
        let minute = self.now().timestamp() / 60;
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if rate.len() > RATE_ADDRESSES_MAX {
            rate.retain(|_, (m, _)| *m == minute);
        }
        let entry = rate.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 > self.config.login_attempts_per_minute {
            let retry_after_s = u64::try_from(60 - self.now().timestamp() % 60).unwrap_or(60);
            metrics::counter!("bp_rate_limited_total").increment(1);
            return Err(ApiError::RateLimited { retry_after_s });
        }
        Ok(())
    }

    /// Appends to the audit log; a failure to write it fails the request (no unaudited
    /// security event).
    pub async fn audit(
        &self,
        kind: AuditKind,
        customer: Option<CustomerId>,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        Ok(self.sca.audit(kind, customer, detail).await?)
    }
}
