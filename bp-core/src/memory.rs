//! The memory store: the whole ledger in process memory behind one lock. It is the test double for
//! everything above the storage layer, and the reference the other stores must agree with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::Timestamp;
use crate::account::Account;
use crate::account_number::AccountNumber;
use crate::clock::{Clock, SystemClock};
use crate::command::{Command, Executed};
use crate::customer::{Customer, Username};
use crate::error::{Error, StoreError};
use crate::event::Event;
use crate::external::rail::clearing_accounts;
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::invariants::{Books, check};
use crate::lease::Lease;
use crate::rules::{LedgerView, Write, decide, system_account};
use crate::service_record::ServiceRecord;
use crate::service_store::{ServiceQuery, ServiceStore};
use crate::state::LedgerState;
use crate::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page, Store, check_cursor_name, in_memory};
use crate::transfer::{Posting, Transfer};

#[derive(Debug, Default)]
struct Inner {
    state: LedgerState,
    cursors: HashMap<String, u64>,
    leases: HashMap<String, crate::lease::Lease>,
    postings: HashMap<AccountId, Vec<Posting>>,
    events: HashMap<AccountId, Vec<Event>>,
    outbox: Vec<Event>,
    /// Service records in the order they were written: a record's cursor is its index + 1.
    services: Vec<ServiceRecordId>,
}

/// A [`Store`] in memory. Cloning shares the same ledger.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty ledger on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty ledger on `clock`, with the rails' clearing accounts open.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let mut state = LedgerState::new();
        for (system, currency) in clearing_accounts() {
            state.insert_account(system_account(system, currency, clock.now()));
        }
        let inner = Inner { state, ..Inner::default() };
        Self { inner: Arc::new(Mutex::new(inner)), clock }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock happens only between deciding and applying, which
        // touch no shared state until `apply`; the data stays consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn execute(&self, cmd: Command) -> Result<Executed, Error> {
        let mut inner = self.lock();
        let decision = decide(&inner.state, &cmd, self.clock.now())?;
        let effects = decision.effects;
        // Assertions catch our bugs: in debug builds every command's effects are checked against
        // the invariants of the accounts they touch before they are written.
        debug_assert_eq!(check(&Books::of_effects(&inner.state, &effects)), Ok(()), "a command's effects");
        inner.state.apply(&effects);
        for p in effects.postings {
            inner.postings.entry(p.account_id).or_default().push(p);
        }
        for e in effects.events {
            inner.events.entry(e.account_id).or_default().push(e.clone());
            inner.outbox.push(e);
        }
        for (write, r) in effects.services {
            if write == Write::Insert {
                inner.services.push(r.id);
            }
        }
        Ok(decision.executed)
    }

    async fn customer(&self, id: CustomerId) -> Result<Option<Customer>, StoreError> {
        Ok(self.lock().state.customer(id).cloned())
    }

    async fn customer_by_username(&self, username: &Username) -> Result<Option<Customer>, StoreError> {
        let inner = self.lock();
        Ok(inner.state.customer_by_username(username).and_then(|id| inner.state.customer(id)).cloned())
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.lock().state.account(id).cloned())
    }

    async fn account_by_number(&self, number: AccountNumber) -> Result<Option<Account>, StoreError> {
        // The memory store is a test double: a scan is fine.
        Ok(self.lock().state.accounts().find(|a| a.number == number).cloned())
    }

    async fn accounts_of(&self, customer: CustomerId) -> Result<Vec<Account>, StoreError> {
        let inner = self.lock();
        let mut accounts: Vec<Account> =
            inner.state.accounts().filter(|a| a.customer_id() == Some(customer)).cloned().collect();
        accounts.sort_by_key(|a| (a.opened_at, a.number.serial()));
        Ok(accounts)
    }

    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        Ok(self.lock().state.transfer(id).cloned())
    }

    async fn postings(&self, account: AccountId, query: &HistoryQuery) -> Result<Page<Posting>, StoreError> {
        let inner = self.lock();
        Ok(in_memory::history_page(inner.postings.get(&account).map(Vec::as_slice).unwrap_or_default(), query))
    }

    async fn events_after(&self, account: AccountId, after_seq: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        Ok(in_memory::events_after(inner.events.get(&account).map(Vec::as_slice).unwrap_or_default(), after_seq, limit))
    }

    async fn outbox_after(&self, after: u64, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(in_memory::outbox_after(&self.lock().outbox, after, limit))
    }

    async fn pending_expired(&self, now: Timestamp, limit: u32) -> Result<Vec<TransferId>, StoreError> {
        Ok(in_memory::pending_expired(self.lock().state.transfers(), now, limit))
    }

    async fn pending_of(&self, account: AccountId, limit: u32) -> Result<Vec<Transfer>, StoreError> {
        Ok(in_memory::pending_of(self.lock().state.transfers(), account, limit))
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        check_cursor_name(name)?;
        Ok(self.lock().cursors.get(name).copied().unwrap_or(0))
    }

    async fn set_cursor(&self, name: &str, position: u64) -> Result<(), StoreError> {
        check_cursor_name(name)?;
        let mut inner = self.lock();
        let cursor = inner.cursors.entry(name.to_owned()).or_insert(0);
        *cursor = (*cursor).max(position);
        Ok(())
    }

    async fn totals(&self) -> Result<Vec<CurrencyTotal>, StoreError> {
        Ok(CurrencyTotal::sum_of(self.lock().state.accounts()))
    }

    async fn acquire_lease(&self, name: &str, holder: &str, now: Timestamp, ms: u32) -> Result<Lease, StoreError> {
        crate::lease::acquire_in(&mut self.lock().leases, name, holder, now, ms)
    }

    async fn release_lease(&self, name: &str, holder: &str, token: u64, now: Timestamp) -> Result<bool, StoreError> {
        crate::lease::release_in(&mut self.lock().leases, name, holder, token, now)
    }
}

fn take<'a>(records: impl Iterator<Item = &'a ServiceRecord>, limit: u32) -> Vec<ServiceRecord> {
    records.take(usize::try_from(limit.min(PAGE_LEN_MAX)).unwrap_or(usize::MAX)).cloned().collect()
}

#[async_trait]
impl ServiceStore for MemoryStore {
    async fn service_record(&self, id: ServiceRecordId) -> Result<Option<ServiceRecord>, StoreError> {
        Ok(self.lock().state.service_record(id).cloned())
    }

    async fn due(&self, now: Timestamp, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
        let inner = self.lock();
        // The memory store is a test double: a scan is fine.
        let mut due: Vec<&ServiceRecord> =
            inner.state.services().filter(|r| r.next_check_at.is_some_and(|at| at <= now)).collect();
        due.sort_by_key(|r| (r.next_check_at, r.id));
        Ok(take(due.into_iter(), limit))
    }

    async fn stuck(&self, limit: u32) -> Result<Vec<ServiceRecord>, StoreError> {
        let inner = self.lock();
        let mut stuck: Vec<&ServiceRecord> = inner.state.services().filter(|r| r.stuck_since.is_some()).collect();
        stuck.sort_by_key(|r| (r.stuck_since, r.id));
        Ok(take(stuck.into_iter(), limit))
    }

    async fn service_records_of(
        &self,
        customer: CustomerId,
        query: &ServiceQuery,
    ) -> Result<Page<ServiceRecord>, StoreError> {
        let inner = self.lock();
        Ok(query.page_of(&inner.services, &inner.state, customer))
    }
}
