//! A circuit breaker for calls to one outside party: after `failures_max` consecutive failures
//! it opens and calls fail fast (as `NotSent::CircuitOpen`, so nothing reaches a party that is
//! down and callers keep their key for later); after `cool_down_ms` it lets one probe through
//! (half-open): a success closes it, a failure opens it again. Time comes from an injected
//! clock, so tests move it by hand.
//!
//! A probe whose outcome never comes back (its caller dropped it) does not wedge the breaker:
//! after another `cool_down_ms` the next call becomes the probe.

use std::sync::{Arc, Mutex, PoisonError};

use bp_core::Timestamp;
use bp_core::clock::Clock;
use bp_core::external::NotSent;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

/// When a breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures (transport errors, 5xx) that open the circuit (at least 1).
    pub failures_max: u32,
    /// How long it stays open before one probe may pass, in milliseconds (at least 1).
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, for 30 s.
    fn default() -> Self {
        Self { failures_max: 5, cool_down_ms: 30_000 }
    }
}

impl BreakerConfig {
    /// Refuses a breaker that could never close or never open.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.failures_max == 0 || self.cool_down_ms == 0 {
            return Err("breaker: failures_max and cool_down_ms must be at least 1");
        }
        Ok(())
    }
}

/// The breaker's state, as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe may pass (or is passing); other calls fail fast.
    HalfOpen,
}

impl BreakerState {
    /// The state as a gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// The breaker's state and counters since it was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Failures in a row (in the closed state).
    pub consecutive_failures: u32,
    /// How many times it opened.
    pub opened_total: u64,
    /// How many calls it failed fast.
    pub rejected_total: u64,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Timestamp },
    HalfOpen { probe_until: Timestamp },
}

#[derive(Debug)]
struct Inner {
    state: State,
    opened_total: u64,
    rejected_total: u64,
}

/// A circuit breaker for one party; see the module documentation.
#[derive(Debug)]
pub struct CircuitBreaker {
    party: &'static str,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

fn millis(ms: u64) -> TimeDelta {
    TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000))
}

impl CircuitBreaker {
    /// A closed breaker for `party` (its name in metrics), timed by `clock`.
    pub fn new(party: &'static str, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let inner = Inner { state: State::Closed { failures: 0 }, opened_total: 0, rejected_total: 0 };
        Self { party, config, clock, inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// May a call go out now? `Err(CircuitOpen)` if not; otherwise the caller must report its
    /// outcome with [`CircuitBreaker::record_success`] or [`CircuitBreaker::record_failure`].
    pub fn try_acquire(&self) -> Result<(), NotSent> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let cool_down = millis(self.config.cool_down_ms);
        let allowed = match inner.state {
            State::Closed { .. } => true,
            State::Open { until } | State::HalfOpen { probe_until: until } if now >= until => {
                inner.state = State::HalfOpen { probe_until: now + cool_down };
                self.publish(BreakerState::HalfOpen);
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        };
        if allowed {
            return Ok(());
        }
        inner.rejected_total = inner.rejected_total.saturating_add(1);
        metrics::counter!("bp_external_circuit_rejected_total", "party" => self.party).increment(1);
        Err(NotSent::CircuitOpen)
    }

    /// The call reached the party and it answered (anything but a 5xx): the circuit closes.
    pub fn record_success(&self) {
        let mut inner = self.lock();
        if !matches!(inner.state, State::Closed { .. }) {
            self.publish(BreakerState::Closed);
        }
        inner.state = State::Closed { failures: 0 };
    }

    /// The call failed (a transport error or a 5xx): one more failure in a row; the circuit
    /// opens at `failures_max`, and at once when the failure was a half-open probe.
    pub fn record_failure(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let open = match inner.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                inner.state = State::Closed { failures };
                failures >= self.config.failures_max
            }
            State::HalfOpen { .. } => true,
            // A call that was in flight when the circuit opened: the cool-down stands.
            State::Open { .. } => false,
        };
        if open {
            inner.state = State::Open { until: now + millis(self.config.cool_down_ms) };
            inner.opened_total = inner.opened_total.saturating_add(1);
            metrics::counter!("bp_external_circuit_opened_total", "party" => self.party).increment(1);
            self.publish(BreakerState::Open);
        }
    }

    fn publish(&self, state: BreakerState) {
        metrics::gauge!("bp_external_circuit_state", "party" => self.party).set(state.gauge());
        tracing::info!(party = self.party, state = ?state, "circuit breaker");
    }

    /// The state now (an open circuit whose cool-down has passed reads as half-open: the next
    /// call is let through as the probe).
    pub fn state(&self) -> BreakerState {
        self.stats().state
    }

    /// The state and counters.
    pub fn stats(&self) -> BreakerStats {
        let now = self.clock.now();
        let inner = self.lock();
        let (state, consecutive_failures) = match inner.state {
            State::Closed { failures } => (BreakerState::Closed, failures),
            State::Open { until } if now < until => (BreakerState::Open, 0),
            State::Open { .. } | State::HalfOpen { .. } => (BreakerState::HalfOpen, 0),
        };
        BreakerStats {
            state,
            consecutive_failures,
            opened_total: inner.opened_total,
            rejected_total: inner.rejected_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bp_core::clock::ManualClock;
    use chrono::TimeZone;

    fn breaker() -> (Arc<ManualClock>, CircuitBreaker) {
        let start = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().expect("time");
        let clock = Arc::new(ManualClock::new(start));
        let config = BreakerConfig { failures_max: 3, cool_down_ms: 1_000 };
        (clock.clone(), CircuitBreaker::new("test", config, clock))
    }

    fn advance(clock: &ManualClock, ms: i64) {
        clock.set(clock.now() + TimeDelta::milliseconds(ms));
    }

    #[test]
    fn opens_after_consecutive_failures_and_fails_fast() {
        let (_, b) = breaker();
        for _ in 0..2 {
            assert_eq!(b.try_acquire(), Ok(()));
            b.record_failure();
        }
        b.record_success();
        assert_eq!(b.stats().consecutive_failures, 0, "a success resets the count");
        for _ in 0..3 {
            assert_eq!(b.try_acquire(), Ok(()));
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire(), Err(NotSent::CircuitOpen));
        let stats = b.stats();
        assert_eq!((stats.opened_total, stats.rejected_total), (1, 1));
    }

    #[test]
    fn lets_one_probe_through_after_the_cool_down() {
        let (clock, b) = breaker();
        for _ in 0..3 {
            b.record_failure();
        }
        advance(&clock, 999);
        assert_eq!(b.try_acquire(), Err(NotSent::CircuitOpen), "still cooling down");
        advance(&clock, 1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(), Ok(()), "the probe");
        assert_eq!(b.try_acquire(), Err(NotSent::CircuitOpen), "one probe at a time");
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe opens it again");
        assert_eq!(b.stats().opened_total, 2);
        advance(&clock, 1_000);
        assert_eq!(b.try_acquire(), Ok(()), "the next probe");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.try_acquire(), Ok(()));
    }

    #[test]
    fn a_lost_probe_does_not_wedge_it() {
        let (clock, b) = breaker();
        for _ in 0..3 {
            b.record_failure();
        }
        advance(&clock, 1_000);
        assert_eq!(b.try_acquire(), Ok(()), "a probe whose outcome never comes");
        advance(&clock, 999);
        assert_eq!(b.try_acquire(), Err(NotSent::CircuitOpen));
        advance(&clock, 1);
        assert_eq!(b.try_acquire(), Ok(()), "another probe after another cool-down");
    }

    #[test]
    fn config_bounds() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
        assert!(BreakerConfig { failures_max: 0, cool_down_ms: 1 }.validate().is_err());
        assert!(BreakerConfig { failures_max: 1, cool_down_ms: 0 }.validate().is_err());
    }
}
