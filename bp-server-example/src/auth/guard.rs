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
use bp_core::transient::{SharedState, Slots, StateKind};

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

/// What a change of a shared state does with the state it read.
enum Step<T> {
    /// Nothing to write: the answer.
    Keep(T),
    /// Write this value, ending then; the answer once it is written.
    Write(Vec<u8>, Timestamp, T),
}

impl Provider {
    /// Changes the shared state of `kind` and `key` by `step` (given the state read, ended or
    /// not), swapping from the version read and reading again when another request changed it
    /// first; `503` after [`SWAPS_LOST_MAX`] losses in a row.
    async fn change<T>(
        &self,
        kind: StateKind,
        key: [u8; 32],
        mut step: impl FnMut(Option<&SharedState>) -> Result<Step<T>, ApiError>,
    ) -> Result<T, ApiError> {
        for _ in 0..SWAPS_LOST_MAX {
            let current = self.security.shared_state(kind, key).await?;
            let version = current.as_ref().map_or(0, |s| s.version);
            match step(current.as_ref())? {
                Step::Keep(answer) => return Ok(answer),
                Step::Write(value, ends, answer) => {
                    if self.security.swap_shared_state(kind, key, version, value, ends).await? {
                        return Ok(answer);
                    }
                }
            }
        }
        Err(ApiError::Unavailable)
    }

    /// Counts one attempt of `key` in `minute` in the shared store: the attempts of `key` in it
    /// so far, this one included. The count is the state's version.
    async fn count_attempt(&self, kind: StateKind, key: &[u8], minute: i64) -> Result<u32, ApiError> {
        // Kept a minute past its own, for processes whose clocks lag.
        let ends = chrono::DateTime::from_timestamp(minute.saturating_add(2).saturating_mul(60), 0)
            .ok_or(ApiError::Internal)?;
        self.change(kind, state_key(&[key, &minute.to_be_bytes()]), |current| {
            let count = current.map_or(0, |s| s.version) + 1;
            Ok(Step::Write(Vec::new(), ends, u32::try_from(count).unwrap_or(u32::MAX)))
        })
        .await
    }

    /// Takes one of at most `max` slots of `key` (the things of a kind in progress: sign-ins of a
    /// source, registrations of a customer) for `slot` until `ends`: false, changing nothing,
    /// when all are taken by slots that have not ended ([`Slots::take`]).
    pub async fn take_slot(
        &self,
        kind: StateKind,
        key: &[u8],
        slot: [u8; 8],
        ends: Timestamp,
        max: usize,
    ) -> Result<bool, ApiError> {
        let now = self.now();
        self.change(kind, state_key(&[key]), |current| {
            let mut slots = current.map(|s| Slots::decode(&s.value)).unwrap_or_default();
            Ok(match slots.take(slot, ends, max, now) {
                true => Step::Write(slots.encode(), slots.ends(now), true),
                false => Step::Keep(false),
            })
        })
        .await
    }

    /// Gives back `slot` of `key` (its thing finished); nothing when it is not taken.
    pub async fn free_slot(&self, kind: StateKind, key: &[u8], slot: [u8; 8]) -> Result<(), ApiError> {
        let now = self.now();
        self.change(kind, state_key(&[key]), |current| {
            let mut slots = current.map(|s| Slots::decode(&s.value)).unwrap_or_default();
            Ok(match slots.free(slot) {
                true => Step::Write(slots.encode(), slots.ends(now), ()),
                false => Step::Keep(()),
            })
        })
        .await
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

    /// The throttle a shared state holds; an ended one, or none, reads as a clean one.
    fn throttle_of(&self, stored: Option<&SharedState>) -> Result<SecurityState, ApiError> {
        match stored {
            Some(s) if s.expires_at > self.now() => serde_json::from_slice(&s.value).map_err(|_| ApiError::Internal),
            _ => Ok(SecurityState::default()),
        }
    }

    /// The throttle of (`username`, `source`) as stored, and its version (0: none).
    async fn throttle(&self, key: [u8; 32]) -> Result<(u64, SecurityState), ApiError> {
        let stored = self.security.shared_state(StateKind::PasswordThrottle, key).await?;
        Ok((stored.as_ref().map_or(0, |s| s.version), self.throttle_of(stored.as_ref())?))
    }

    /// Whether passwords for `username` from `source` are refused for now.
    pub async fn throttled(&self, username: &str, source: Source) -> Result<bool, ApiError> {
        let (_, state) = self.throttle(Self::throttle_key(username, source)).await?;
        Ok(lockout::locked_for_s(&state, self.now()).is_some())
    }

    /// Counts a failed password for `username` from `source`; when that locks the pair out, for
    /// how long, in seconds.
    pub async fn password_failed(&self, username: &str, source: Source) -> Result<Option<u64>, ApiError> {
        let decay = chrono::Duration::seconds(i64::try_from(self.lockout.decay_s).unwrap_or(i64::MAX / 1_000_000));
        let now = self.now();
        self.change(StateKind::PasswordThrottle, Self::throttle_key(username, source), |current| {
            let mut state = self.throttle_of(current)?;
            let failure = lockout::count_failure(&mut state, &self.lockout, now);
            // Kept while it locks and until its failures decay.
            let ends = state.locked_until.map_or(now + decay, |until| until.max(now + decay));
            let value = serde_json::to_vec(&state).map_err(|_| ApiError::Internal)?;
            Ok(Step::Write(value, ends, failure.locked_for_s))
        })
        .await
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
