//! The log applied in memory: every record of the ledger as of batch `applied`, which each store
//! instance materialises from the shared log by batch number (idempotently: a batch at or below
//! `applied` is skipped) and which every read and every decision is made on.

use std::collections::HashMap;

use bp_core::account::Account;
use bp_core::account_number::AccountNumber;
use bp_core::error::{StoreError, StoreErrorKind};
use bp_core::event::Event;
use bp_core::ids::{AccountId, ServiceRecordId};
use bp_core::invariants::{Books, check};
use bp_core::rules::{Effects, LedgerView, Write};
use bp_core::state::LedgerState;
use bp_core::transfer::Posting;

use super::docs::BatchDoc;

/// The ledger as of batch `applied` of the log.
#[derive(Debug, Default)]
pub(crate) struct Replica {
    /// The last batch applied; 0 before the first.
    pub(crate) applied: u64,
    pub(crate) state: LedgerState,
    pub(crate) postings: HashMap<AccountId, Vec<Posting>>,
    pub(crate) events: HashMap<AccountId, Vec<Event>>,
    /// Every event in commit order: an entry's outbox position is its index + 1, the same in every
    /// process since every process applies the same log in the same order.
    pub(crate) outbox: Vec<Event>,
    /// Service records in the order they were written: a record's cursor is its index + 1.
    pub(crate) services: Vec<ServiceRecordId>,
    pub(crate) numbers: HashMap<AccountNumber, AccountId>,
}

impl Replica {
    pub(crate) fn new() -> Self {
        Self { state: LedgerState::new(), ..Self::default() }
    }

    /// Applies `batch` if it is the next one; skips one already applied. A batch past the next
    /// one is a hole in the log, which the store never reads (it stops at the first gap), so it
    /// is reported as corruption.
    pub(crate) fn apply(&mut self, batch: BatchDoc) -> Result<(), StoreError> {
        if batch.number <= self.applied {
            return Ok(());
        }
        if batch.number != self.applied + 1 {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!("batch {} of the log follows batch {}", batch.number, self.applied),
            ));
        }
        for doc in batch.commands {
            let effects = Effects::from(doc);
            // Assertions catch our bugs: the invariants of the accounts a command touches are
            // checked where its effects are read back from the log, as where they were decided.
            if let Err(v) = check(&Books::of_effects(&self.state, &effects)) {
                return Err(StoreError::new(
                    StoreErrorKind::Corrupt,
                    format!("batch {} breaks an invariant of the ledger: {v:?}", batch.number),
                ));
            }
            self.apply_effects(effects);
        }
        self.applied = batch.number;
        Ok(())
    }

    fn apply_effects(&mut self, effects: Effects) {
        self.state.apply(&effects);
        for (_, a) in &effects.accounts {
            self.numbers.insert(a.number, a.id);
        }
        for p in effects.postings {
            self.postings.entry(p.account_id).or_default().push(p);
        }
        for e in effects.events {
            self.events.entry(e.account_id).or_default().push(e.clone());
            self.outbox.push(e);
        }
        for (write, r) in effects.services {
            if write == Write::Insert {
                self.services.push(r.id);
            }
        }
    }

    pub(crate) fn account_by_number(&self, number: AccountNumber) -> Option<&Account> {
        self.numbers.get(&number).and_then(|id| self.state.account(*id))
    }
}

/// The replica's state with the effects of the commands decided so far in a batch on top, so
/// that the next command of the batch is decided after them. Dropped when the batch loses its
/// race for its number: the replica itself changes only by applying the log.
#[derive(Debug)]
pub(crate) struct Overlay<'a> {
    base: &'a LedgerState,
    top: LedgerState,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(base: &'a LedgerState) -> Self {
        Self { base, top: LedgerState::new() }
    }

    pub(crate) fn apply(&mut self, effects: &Effects) {
        self.top.apply(effects);
    }
}

impl LedgerView for Overlay<'_> {
    fn account(&self, id: AccountId) -> Option<&Account> {
        self.top.account(id).or_else(|| self.base.account(id))
    }

    fn transfer(&self, id: bp_core::ids::TransferId) -> Option<&bp_core::transfer::Transfer> {
        self.top.transfer(id).or_else(|| self.base.transfer(id))
    }

    fn customer(&self, id: bp_core::ids::CustomerId) -> Option<&bp_core::customer::Customer> {
        self.top.customer(id).or_else(|| self.base.customer(id))
    }

    fn customer_by_username(&self, username: &bp_core::customer::Username) -> Option<bp_core::ids::CustomerId> {
        if let Some(id) = self.top.customer_by_username(username) {
            return Some(id);
        }
        // A customer who changed username earlier in the batch no longer holds the old one.
        let id = self.base.customer_by_username(username)?;
        match self.top.customer(id) {
            Some(c) if &c.username != username => None,
            _ => Some(id),
        }
    }

    fn next_account_serial(&self) -> u64 {
        self.top.next_account_serial().max(self.base.next_account_serial())
    }

    fn service_record(&self, id: ServiceRecordId) -> Option<&bp_core::service_record::ServiceRecord> {
        self.top.service_record(id).or_else(|| self.base.service_record(id))
    }
}
