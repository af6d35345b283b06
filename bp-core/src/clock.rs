//! The clock, injectable so that tests can replay time.

use std::sync::Mutex;

use crate::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in UTC.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock, truncated to microseconds (the precision stores keep).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        truncate_to_micros(chrono::Utc::now())
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(truncate_to_micros(start)))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = truncate_to_micros(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Drops sub-microsecond precision, so that a timestamp survives a round trip through any store.
pub fn truncate_to_micros(t: Timestamp) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
