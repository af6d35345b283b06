//! Exactly-once, in-order delivery per account on top of an at-least-once bus: a consumer keeps
//! the last sequence number it delivered per account, drops what it has seen, and fills a gap
//! from the store before delivering what comes after it.

use std::collections::HashMap;

use bp_core::event::Event;
use bp_core::ids::AccountId;
use bp_core::store::{PAGE_LEN_MAX, Store};
use bp_core::{StoreError, StoreErrorKind};

/// What a consumer does with an event, as far as it can tell without the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next of its account (or the first seen of an account without a start): deliver it.
    Next,
    /// Delivered before: drop it.
    Seen,
    /// Events after `after` and before it are missing: fill them from the store first
    /// ([`Sequencer::admit`]).
    Gap {
        /// The last sequence number delivered.
        after: u64,
    },
}

/// Per-account delivery state of one consumer.
#[derive(Debug, Default)]
pub struct Sequencer {
    last: HashMap<AccountId, u64>,
}

impl Sequencer {
    /// A consumer that has delivered nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Says that `account`'s events up to `seq` are delivered already (from a first read of
    /// the account, or a client's `Last-Event-ID`).
    pub fn start_at(&mut self, account: AccountId, seq: u64) {
        let last = self.last.entry(account).or_insert(seq);
        *last = (*last).max(seq);
    }

    /// The last sequence number delivered for `account`.
    pub fn last(&self, account: AccountId) -> Option<u64> {
        self.last.get(&account).copied()
    }

    /// The verdict on `account`'s event `seq` without reading the store; [`Verdict::Next`] counts
    /// it as delivered.
    pub fn check(&mut self, account: AccountId, seq: u64) -> Verdict {
        match self.last.get(&account).copied() {
            Some(last) if seq <= last => Verdict::Seen,
            Some(last) if seq > last + 1 => Verdict::Gap { after: last },
            _ => {
                self.last.insert(account, seq);
                Verdict::Next
            }
        }
    }

    /// What to deliver now that `event` arrived: nothing when it was delivered before; itself when
    /// it is the next of its account (or the first seen of an account without a start); else the
    /// missing events, read from the store, then itself.
    pub async fn admit(&mut self, event: Event, store: &dyn Store) -> Result<Vec<Event>, StoreError> {
        let account = event.account_id;
        let last = match self.check(account, event.seq) {
            Verdict::Next => return Ok(vec![event]),
            Verdict::Seen => return Ok(Vec::new()),
            Verdict::Gap { after } => after,
        };
        let mut out = Vec::new();
        let mut after = last;
        while after + 1 < event.seq {
            let missing = u32::try_from(event.seq - after - 1).unwrap_or(u32::MAX).min(PAGE_LEN_MAX);
            let page = store.events_after(account, after, missing).await?;
            let Some(end) = page.last().map(|e| e.seq) else {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "the store does not have the events of a gap yet; retry",
                ));
            };
            out.extend(page.into_iter().filter(|e| e.seq < event.seq));
            after = end;
        }
        self.last.insert(account, event.seq);
        out.push(event);
        Ok(out)
    }
}
