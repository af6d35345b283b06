//! Lockout after repeated authentication failures, progressive: each lockout without a
//! successful sign-in in between lasts twice as long as the one before, up to a ceiling; failures
//! and lockouts are forgotten after `decay_s` without a failure, so that an old attack does not
//! make today's lockouts long. Pure functions over a [`SecurityState`]: a customer's (second
//! factors and SCA answers, kept by the [`Sca`](super::Sca) service under the customer's lock),
//! or a server's per (username, source) record of failed passwords.

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::security::SecurityState;

/// Doublings of the lockout at most (2^20 × the first lockout is far beyond any ceiling).
const DOUBLINGS_MAX: u32 = 20;

/// The configurable lockout (the server's `[lockout]` settings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutRules {
    /// Consecutive failures that lock the customer out.
    pub failures_max: u32,
    /// First lockout duration, in seconds; each further lockout doubles it.
    pub lock_s: u64,
    /// Longest lockout, in seconds.
    pub lock_max_s: u64,
    /// Failures and lockouts are forgotten this many seconds after the last failure.
    pub decay_s: u64,
}

impl Default for LockoutRules {
    fn default() -> Self {
        Self { failures_max: 5, lock_s: 60, lock_max_s: 3600, decay_s: 86_400 }
    }
}

impl LockoutRules {
    /// Refuses settings that would never lock or never unlock.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.failures_max == 0 || self.lock_s == 0 || self.lock_max_s < self.lock_s || self.decay_s < self.lock_max_s
        {
            return Err(
                "lockout: failures_max and lock_s must be positive, lock_max_s ≥ lock_s and decay_s ≥ lock_max_s",
            );
        }
        Ok(())
    }

    /// How long the lockout after `lockouts` earlier ones lasts, in seconds.
    pub fn lock_for_s(&self, lockouts: u32) -> u64 {
        self.lock_s.saturating_mul(1u64 << lockouts.min(DOUBLINGS_MAX)).min(self.lock_max_s)
    }
}

/// Seconds until a customer locked out at `now` may try again, or `None` when not locked.
pub fn locked_for_s(state: &SecurityState, now: Timestamp) -> Option<u64> {
    match state.locked_until {
        Some(until) if until > now => Some(u64::try_from((until - now).num_seconds().max(1)).unwrap_or(1)),
        _ => None,
    }
}

/// What one more failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Consecutive failures, this one included.
    pub failures: u32,
    /// When it locked the customer out: for how long, in seconds.
    pub locked_for_s: Option<u64>,
}

/// Counts one failure at `now`; at `failures_max` in a row the customer is locked out (for
/// longer each time) and the count starts again. Failures and lockouts older than `decay_s` are
/// forgotten first.
pub fn count_failure(state: &mut SecurityState, rules: &LockoutRules, now: Timestamp) -> Failure {
    let decay = chrono::Duration::seconds(i64::try_from(rules.decay_s).unwrap_or(i64::MAX / 1_000_000));
    if state.last_failure_at.is_some_and(|last| now - last >= decay) {
        state.failures = 0;
        state.lockouts = 0;
    }
    state.last_failure_at = Some(now);
    state.failures = state.failures.saturating_add(1);
    let failures = state.failures;
    if failures < rules.failures_max {
        return Failure { failures, locked_for_s: None };
    }
    let lock_s = rules.lock_for_s(state.lockouts);
    let seconds = i64::try_from(lock_s).unwrap_or(i64::MAX / 1_000_000);
    state.locked_until = Some(now.checked_add_signed(chrono::Duration::seconds(seconds)).unwrap_or(now));
    state.lockouts = state.lockouts.saturating_add(1);
    state.failures = 0;
    Failure { failures, locked_for_s: Some(lock_s) }
}

/// A successful sign-in with both factors: the failures and the lockout history are forgotten,
/// and (being an SCA) the low-value exemption counters start again.
pub fn signed_in(state: &mut SecurityState) {
    state.failures = 0;
    state.lockouts = 0;
    state.locked_until = None;
    super::reset_low_value(state);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_767_225_600 + s, 0).expect("time")
    }

    #[test]
    fn the_fifth_failure_locks_for_longer_each_time_up_to_the_ceiling() {
        let rules = LockoutRules::default();
        let mut state = SecurityState::default();
        for i in 1..5 {
            assert_eq!(count_failure(&mut state, &rules, at(0)), Failure { failures: i, locked_for_s: None });
            assert_eq!(locked_for_s(&state, at(0)), None);
        }
        assert_eq!(count_failure(&mut state, &rules, at(0)), Failure { failures: 5, locked_for_s: Some(60) });
        assert_eq!(locked_for_s(&state, at(0)), Some(60));
        assert_eq!(locked_for_s(&state, at(59)), Some(1));
        assert_eq!(locked_for_s(&state, at(60)), None, "unlocked when the time is up");
        assert_eq!(state.failures, 0, "the count starts again");
        for _ in 0..4 {
            count_failure(&mut state, &rules, at(60));
        }
        assert_eq!(count_failure(&mut state, &rules, at(60)).locked_for_s, Some(120), "doubled");
        state.lockouts = 10;
        assert_eq!(rules.lock_for_s(state.lockouts), 3600, "capped at lock_max_s");
        assert_eq!(rules.lock_for_s(u32::MAX), 3600, "no overflow");
        signed_in(&mut state);
        assert_eq!((state.failures, state.lockouts, state.locked_until), (0, 0, None));
    }

    #[test]
    fn failures_and_lockouts_decay_after_a_quiet_day() {
        let rules = LockoutRules::default();
        let mut state = SecurityState::default();
        for _ in 0..3 {
            for _ in 0..5 {
                count_failure(&mut state, &rules, at(0));
            }
        }
        assert_eq!(state.lockouts, 3, "three lockouts, each longer");
        count_failure(&mut state, &rules, at(86_399));
        assert_eq!((state.failures, state.lockouts), (1, 3), "within a day, remembered");
        let later = 86_399 + 86_400;
        assert_eq!(count_failure(&mut state, &rules, at(later)), Failure { failures: 1, locked_for_s: None });
        assert_eq!(state.lockouts, 0, "forgotten after a day without failures");
        for _ in 0..4 {
            count_failure(&mut state, &rules, at(later));
        }
        assert_eq!(locked_for_s(&state, at(later)), Some(60), "the next lockout is the first again");
    }

    #[test]
    fn settings_that_never_lock_or_never_unlock_are_refused() {
        assert!(LockoutRules::default().validate().is_ok());
        for bad in [
            LockoutRules { failures_max: 0, ..LockoutRules::default() },
            LockoutRules { lock_s: 0, ..LockoutRules::default() },
            LockoutRules { lock_s: 60, lock_max_s: 59, ..LockoutRules::default() },
            LockoutRules { decay_s: 60, ..LockoutRules::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
