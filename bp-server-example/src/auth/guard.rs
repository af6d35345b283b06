//! The security bookkeeping of sign-in: per-minute budgets of attempts per client source (an
//! IPv4 address or an IPv6 /64, behind trusted proxies the forwarded client's) and per username,
//! the throttle of failed passwords per (username, source), and the audit log as the provider
//! writes it (through bp-core's `Sca`, whose hooks wake the audit tail and log the event).
//!
//! Failed passwords lock out a (username, source) pair, not the customer: someone who knows only a
//! username cannot lock its owner out from elsewhere (the lockout of a customer counts only
//! failures that need the password or a session: second factors and SCA answers). The rule is
//! bp-core's lockout (progressive, decaying), applied to a record per pair.
//!
//! Budgets and throttles are shared states of the security store
//! ([`bp_core::transient::SharedState`]), keyed by the SHA-256 of what they count, so that every
//! server process counts the same attempts: a client spreading its attempts over the replicas
//! behind a load balancer gets no more than from one. Each count is a swap from the version read,
//! retried when another process counted first. A store that fails them fails the attempt
//! (`503`): sign-in is refused rather than left uncounted.

use bp_core::Timestamp;
use bp_core::ids::CustomerId;
use bp_core::sca::lockout;
use bp_core::security::{AuditKind, SecurityState};
use bp_core::transient::StateKind;

use crate::auth::Provider;
use crate::auth::crypto::sha256;
use crate::http::client::Source;
use crate::http::problem::ApiError;

/// Characters of a username kept as a key (longer ones are not usernames; they share a key).
const USERNAME_KEY_CHARS_MAX: usize = 64;
/// Swaps of one shared state lost in a row to other requests before the attempt is refused as
/// busy (each loss means another request counted).
const SWAPS_LOST_MAX: u32 = 32;

/// The key of a username as typed: trimmed, lower-case, bounded.
pub fn username_key(typed: &str) -> String {
    typed.trim().chars().take(USERNAME_KEY_CHARS_MAX).flat_map(char::to_lowercase).collect()
}

/// The key of a shared state about `parts`: their SHA-256, each part length-prefixed.
fn state_key(parts: &[&[u8]]) -> [u8; 32] {
    let mut joined = Vec::new();
    for part in parts {
        joined.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        joined.extend_from_slice(part);
    }
    sha256(&joined)
}

impl Provider {
    /// Counts one attempt of `key` in `minute` in the shared store: the attempts of `key` in it
    /// so far, this one included. The count is the state's version.
    async fn count_attempt(&self, kind: StateKind, key: &[u8], minute: i64) -> Result<u32, ApiError> {
        let state_key = state_key(&[key, &minute.to_be_bytes()]);
        // Kept a minute past its own, for processes whose clocks lag.
        let ends = chrono::DateTime::from_timestamp(minute.saturating_add(2).saturating_mul(60), 0)
            .ok_or(ApiError::Internal)?;
        for _ in 0..SWAPS_LOST_MAX {
            let version = self.security.shared_state(kind, state_key).await?.map_or(0, |s| s.version);
            if self.security.swap_shared_state(kind, state_key, version, Vec::new(), ends).await? {
                return Ok(u32::try_from(version + 1).unwrap_or(u32::MAX));
            }
        }
        Err(ApiError::Unavailable)
    }

    /// Takes one of at most `max` slots of `key` (the things of a kind in progress: sign-ins of a
    /// source, registrations of a customer) for `slot` until `ends`: false, changing nothing,
    /// when all are taken by slots that have not ended. The state is the list of slots (each 8
    /// bytes of its id and its end in microseconds).
    pub async fn take_slot(
        &self,
        kind: StateKind,
        key: &[u8],
        slot: [u8; 8],
        ends: Timestamp,
        max: usize,
    ) -> Result<bool, ApiError> {
        let key = state_key(&[key]);
        for _ in 0..SWAPS_LOST_MAX {
            let now = self.now();
            let (version, mut slots) = self.slots(kind, key).await?;
            slots.retain(|(_, end)| *end > now.timestamp_micros());
            if slots.len() >= max {
                return Ok(false);
            }
            slots.push((slot, ends.timestamp_micros()));
            if self.swap_slots(kind, key, version, &slots).await? {
                return Ok(true);
            }
        }
        Err(ApiError::Unavailable)
    }

    /// Gives back `slot` of `key` (its thing finished); nothing when it is not taken.
    pub async fn free_slot(&self, kind: StateKind, key: &[u8], slot: [u8; 8]) -> Result<(), ApiError> {
        let key = state_key(&[key]);
        for _ in 0..SWAPS_LOST_MAX {
            let (version, mut slots) = self.slots(kind, key).await?;
            let before = slots.len();
            slots.retain(|(id, _)| *id != slot);
            if slots.len() == before || self.swap_slots(kind, key, version, &slots).await? {
                return Ok(());
            }
        }
        Err(ApiError::Unavailable)
    }

    async fn slots(&self, kind: StateKind, key: [u8; 32]) -> Result<(u64, Vec<([u8; 8], i64)>), ApiError> {
        let Some(stored) = self.security.shared_state(kind, key).await? else { return Ok((0, Vec::new())) };
        let slots = stored
            .value
            .chunks_exact(16)
            .map(|c| {
                let mut id = [0; 8];
                id.copy_from_slice(&c[..8]);
                let mut end = [0; 8];
                end.copy_from_slice(&c[8..]);
                (id, i64::from_be_bytes(end))
            })
            .collect();
        Ok((stored.version, slots))
    }

    async fn swap_slots(
        &self,
        kind: StateKind,
        key: [u8; 32],
        version: u64,
        slots: &[([u8; 8], i64)],
    ) -> Result<bool, ApiError> {
        let value: Vec<u8> = slots.iter().flat_map(|(id, end)| id.iter().copied().chain(end.to_be_bytes())).collect();
        // Kept until its last slot ends.
        let last = slots.iter().map(|(_, end)| *end).max().unwrap_or(0);
        let ends = chrono::DateTime::from_timestamp_micros(last).ok_or(ApiError::Internal)?.max(self.now());
        Ok(self.security.swap_shared_state(kind, key, version, value, ends).await?)
    }

    /// Counts one sign-in attempt from `source` against its per-minute budget.
    pub async fn rate_limit(&self, source: Source) -> Result<(), ApiError> {
        let now = self.now().timestamp();
        let count = self.count_attempt(StateKind::SourceAttempts, &source.key_bytes(), now / 60).await?;
        if count > self.config.login_attempts_per_minute {
            metrics::counter!("bp_rate_limited_total").increment(1);
            return Err(ApiError::RateLimited { retry_after_s: u64::try_from(60 - now % 60).unwrap_or(60) });
        }
        Ok(())
    }

    /// Counts one password attempt for `username` (from any source); whether it is within the
    /// per-minute budget of that username.
    pub async fn username_within_budget(&self, username: &str) -> Result<bool, ApiError> {
        let minute = self.now().timestamp() / 60;
        let count = self.count_attempt(StateKind::UsernameAttempts, username_key(username).as_bytes(), minute).await?;
        Ok(count <= self.config.login_attempts_per_username_per_minute)
    }

    fn throttle_key(username: &str, source: Source) -> [u8; 32] {
        state_key(&[username_key(username).as_bytes(), &source.key_bytes()])
    }

    /// The throttle of (`username`, `source`) and its version (0: none); an ended one reads as
    /// none.
    async fn throttle(&self, key: [u8; 32]) -> Result<(u64, SecurityState), ApiError> {
        let Some(stored) = self.security.shared_state(StateKind::PasswordThrottle, key).await? else {
            return Ok((0, SecurityState::default()));
        };
        if stored.expires_at <= self.now() {
            return Ok((stored.version, SecurityState::default()));
        }
        let state = serde_json::from_slice(&stored.value).map_err(|_| ApiError::Internal)?;
        Ok((stored.version, state))
    }

    /// Whether passwords for `username` from `source` are refused for now.
    pub async fn throttled(&self, username: &str, source: Source) -> Result<bool, ApiError> {
        let (_, state) = self.throttle(Self::throttle_key(username, source)).await?;
        Ok(lockout::locked_for_s(&state, self.now()).is_some())
    }

    /// Counts a failed password for `username` from `source`; when that locks the pair out, for
    /// how long, in seconds.
    pub async fn password_failed(&self, username: &str, source: Source) -> Result<Option<u64>, ApiError> {
        let key = Self::throttle_key(username, source);
        let decay = chrono::Duration::seconds(i64::try_from(self.lockout.decay_s).unwrap_or(i64::MAX / 1_000_000));
        for _ in 0..SWAPS_LOST_MAX {
            let now = self.now();
            let (version, mut state) = self.throttle(key).await?;
            let failure = lockout::count_failure(&mut state, &self.lockout, now);
            // Kept while it locks and until its failures decay.
            let ends = state.locked_until.map_or(now + decay, |until| until.max(now + decay));
            let value = serde_json::to_vec(&state).map_err(|_| ApiError::Internal)?;
            if self.security.swap_shared_state(StateKind::PasswordThrottle, key, version, value, ends).await? {
                return Ok(failure.locked_for_s);
            }
        }
        Err(ApiError::Unavailable)
    }

    /// A right password for `username` from `source`: its failures there are forgotten.
    pub async fn password_passed(&self, username: &str, source: Source) -> Result<(), ApiError> {
        let key = Self::throttle_key(username, source);
        let (version, state) = self.throttle(key).await?;
        if version == 0 || state == SecurityState::default() {
            return Ok(());
        }
        // Ended now, so read as none and swept; a swap lost means a failure was counted since,
        // which stays.
        let forgotten = serde_json::to_vec(&SecurityState::default()).map_err(|_| ApiError::Internal)?;
        self.security.swap_shared_state(StateKind::PasswordThrottle, key, version, forgotten, self.now()).await?;
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
