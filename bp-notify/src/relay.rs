//! The outbox relay: reads committed events from the store's outbox in bounded batches,
//! publishes them on the bus, and records in the store how far it got. At least once: a batch
//! published but not yet recorded is published again after a restart (consumers drop the
//! duplicates by account and sequence). While the bus is down it retries the same batch with
//! exponential back-off, bounded, and loses nothing: the events wait in the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bp_core::bus::{BusError, EventBus};
use bp_core::store::{PAGE_LEN_MAX, Store};
use bp_core::{StoreError, Timestamp};
use tokio::sync::Notify;

/// Settings of a [`Relay`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// The name its position is recorded under in the store ([`Store::set_cursor`]).
    pub name: String,
    /// Most events per batch (at most the store's page bound, 500).
    pub batch_len_max: u32,
    /// How long to wait for new events when the outbox is drained, unless woken earlier.
    pub idle_wait_ms: u64,
    /// First pause after a failure; it doubles with each failure in a row…
    pub backoff_min_ms: u64,
    /// …up to this.
    pub backoff_max_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            name: "outbox-relay".to_owned(),
            batch_len_max: 500,
            idle_wait_ms: 50,
            backoff_min_ms: 10,
            backoff_max_ms: 5_000,
        }
    }
}

/// Why a step of the relay failed; it will be retried.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the outbox or recording the position failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What the relay has done, for metrics (all counters since start).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Events published.
    pub published: AtomicU64,
    /// The outbox position published and recorded up to.
    pub position: AtomicU64,
    /// Events read but not yet published in the last batch (at least this many are waiting: a
    /// full batch may have more behind it).
    pub waiting: AtomicU64,
    /// Age of the oldest unpublished event, in milliseconds, when the last batch was read.
    pub oldest_waiting_ms: AtomicU64,
    /// Failed steps.
    pub failures: AtomicU64,
}

/// Moves committed events from a store's outbox to a bus.
pub struct Relay {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    stats: Arc<RelayStats>,
    wake: Arc<Notify>,
    position: Option<u64>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("config", &self.config).field("position", &self.position).finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay from `store` to `bus`; it starts where the store says it stopped last time.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn EventBus>, config: RelayConfig) -> Self {
        Self { store, bus, config, stats: Arc::default(), wake: Arc::new(Notify::new()), position: None }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Counts into `stats` (shared with an earlier relay of the same outbox, such as the one
    /// this process ran before it last lost the relay's lease).
    pub fn set_stats(&mut self, stats: Arc<RelayStats>) {
        self.stats = stats;
    }

    /// Notifying this wakes an idle relay at once (call it after a commit to cut latency).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Uses `wake` (shared with whoever commits) as the relay's waker.
    pub fn set_waker(&mut self, wake: Arc<Notify>) {
        self.wake = wake;
    }

    /// Publishes the next batch, if any, and records its position; returns how many events it
    /// published.
    pub async fn step(&mut self, now: Timestamp) -> Result<usize, RelayError> {
        let after = match self.position {
            Some(p) => p,
            None => {
                let p = self.store.cursor(&self.config.name).await?;
                self.position = Some(p);
                p
            }
        };
        let batch = self.store.outbox_after(after, self.config.batch_len_max.clamp(1, PAGE_LEN_MAX)).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            self.stats.waiting.store(0, Ordering::Relaxed);
            self.stats.oldest_waiting_ms.store(0, Ordering::Relaxed);
            return Ok(0);
        };
        let len = batch.len();
        self.stats.waiting.store(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(first) = batch.first() {
            let age = (now - first.event.at).num_milliseconds().max(0);
            self.stats.oldest_waiting_ms.store(u64::try_from(age).unwrap_or(0), Ordering::Relaxed);
        }
        let events: Vec<_> = batch.into_iter().map(|e| e.event).collect();
        self.bus.publish(&events).await?;
        self.store.set_cursor(&self.config.name, last).await?;
        self.position = Some(last);
        self.stats.published.fetch_add(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.stats.position.store(last, Ordering::Relaxed);
        self.stats.waiting.store(0, Ordering::Relaxed);
        Ok(len)
    }

    /// Runs until `stop` completes: a step whenever there may be events (at once after a full
    /// batch, when woken, or every `idle_wait_ms`), backing off after failures.
    pub async fn run(mut self, clock: Arc<dyn bp_core::clock::Clock>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut backoff_ms = self.config.backoff_min_ms.max(1);
        loop {
            let pause = match self.step(clock.now()).await {
                Ok(n) if n >= usize::try_from(self.config.batch_len_max).unwrap_or(usize::MAX) => {
                    backoff_ms = self.config.backoff_min_ms.max(1);
                    continue;
                }
                Ok(_) => {
                    backoff_ms = self.config.backoff_min_ms.max(1);
                    let wake = Arc::clone(&self.wake);
                    tokio::select! {
                        () = &mut stop => return,
                        () = wake.notified() => continue,
                        () = tokio::time::sleep(Duration::from_millis(self.config.idle_wait_ms)) => continue,
                    }
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, backoff_ms, "outbox relay step failed; retrying");
                    let pause = backoff_ms;
                    backoff_ms = backoff_ms.saturating_mul(2).min(self.config.backoff_max_ms.max(1));
                    pause
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(Duration::from_millis(pause)) => {}
            }
        }
    }
}
