//! The security bookkeeping of sign-in: per-minute budgets of attempts per client source (an
//! IPv4 address or an IPv6 /64, behind trusted proxies the forwarded client's) and per username,
//! the throttle of failed passwords per (username, source), and the audit log as the provider
//! writes it (through bp-core's `Sca`, whose hooks wake the audit tail and log the event).
//!
//! Failed passwords lock out a (username, source) pair, not the customer: someone who knows only a
//! username cannot lock its owner out from elsewhere (the lockout of a customer counts only
//! failures that need the password or a session: second factors and SCA answers). The rule is
//! bp-core's lockout (progressive, decaying), applied to a record per pair kept here, in memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use bp_core::ids::CustomerId;
use bp_core::sca::lockout;
use bp_core::security::{AuditKind, SecurityState};

use crate::auth::Provider;
use crate::http::client::Source;
use crate::http::problem::ApiError;

/// Keys a per-minute budget remembers at most before those of past minutes are forgotten.
const RATE_KEYS_MAX: usize = 100_000;
/// (username, source) pairs the password throttle remembers at most before those not locked
/// and past their decay are forgotten.
const THROTTLE_PAIRS_MAX: usize = 100_000;
/// Characters of a username kept as a key (longer ones are not usernames; they share a key).
const USERNAME_KEY_CHARS_MAX: usize = 64;

/// Attempts counted per key in the current minute.
#[derive(Debug)]
pub struct Budget<K>(Mutex<HashMap<K, (i64, u32)>>);

impl<K> Default for Budget<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash> Budget<K> {
    /// Counts one attempt of `key` in `minute`; the attempts of `key` in it so far.
    fn count(&self, key: K, minute: i64) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > RATE_KEYS_MAX {
            map.retain(|_, (m, _)| *m == minute);
        }
        let entry = map.entry(key).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }
}

/// Failed passwords per (username, source), as bp-core's lockout counts them.
pub type Throttle = Mutex<HashMap<(String, Source), SecurityState>>;

/// The key of a username as typed: trimmed, lower-case, bounded.
pub fn username_key(typed: &str) -> String {
    typed.trim().chars().take(USERNAME_KEY_CHARS_MAX).flat_map(char::to_lowercase).collect()
}

impl Provider {
    /// Counts one sign-in attempt from `source` against its per-minute budget.
    pub fn rate_limit(&self, source: Source) -> Result<(), ApiError> {
        let now = self.now().timestamp();
        if self.rate.count(source, now / 60) > self.config.login_attempts_per_minute {
            metrics::counter!("bp_rate_limited_total").increment(1);
            return Err(ApiError::RateLimited { retry_after_s: u64::try_from(60 - now % 60).unwrap_or(60) });
        }
        Ok(())
    }

    /// Counts one password attempt for `username` (from any source); whether it is within the
    /// per-minute budget of that username.
    pub fn username_within_budget(&self, username: &str) -> bool {
        let minute = self.now().timestamp() / 60;
        self.usernames.count(username_key(username), minute) <= self.config.login_attempts_per_username_per_minute
    }

    /// Whether passwords for `username` from `source` are refused for now.
    pub fn throttled(&self, username: &str, source: Source) -> bool {
        let throttle = self.throttle.lock().unwrap_or_else(PoisonError::into_inner);
        throttle.get(&(username_key(username), source)).is_some_and(|s| lockout::locked_for_s(s, self.now()).is_some())
    }

    /// Counts a failed password for `username` from `source`; when that locks the pair out, for
    /// how long, in seconds.
    pub fn password_failed(&self, username: &str, source: Source) -> Option<u64> {
        let now = self.now();
        let mut throttle = self.throttle.lock().unwrap_or_else(PoisonError::into_inner);
        if throttle.len() > THROTTLE_PAIRS_MAX {
            let decay = chrono::Duration::seconds(i64::try_from(self.lockout.decay_s).unwrap_or(i64::MAX / 1_000_000));
            throttle.retain(|_, s| {
                lockout::locked_for_s(s, now).is_some() || s.last_failure_at.is_some_and(|at| now - at < decay)
            });
        }
        let state = throttle.entry((username_key(username), source)).or_default();
        lockout::count_failure(state, &self.lockout, now).locked_for_s
    }

    /// A right password for `username` from `source`: its failures there are forgotten.
    pub fn password_passed(&self, username: &str, source: Source) {
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner).remove(&(username_key(username), source));
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
