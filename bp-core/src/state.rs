//! `LedgerState`: the records the rules decide on, held in memory. The memory store keeps all of
//! it; the SQLite writer keeps it as a cache in front of its database.

use std::collections::HashMap as StdHashMap;

use crate::account::Account;
use crate::customer::{Customer, Username};
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::rules::{Effects, LedgerView};
use crate::service_record::ServiceRecord;
use crate::transfer::Transfer;

/// The maps of the state: std's, with foldhash's randomly seeded hasher (ids are 16 bytes that
/// SipHash would spend most of a lookup on).
type HashMap<K, V> = StdHashMap<K, V, foldhash::quality::RandomState>;

/// Customers, accounts and transfers by id, plus the next account serial.
#[derive(Clone, Debug, Default)]
pub struct LedgerState {
    customers: HashMap<CustomerId, Customer>,
    usernames: HashMap<Username, CustomerId>,
    accounts: HashMap<AccountId, Account>,
    transfers: HashMap<TransferId, Transfer>,
    services: HashMap<ServiceRecordId, ServiceRecord>,
    next_account_serial: u64,
}

impl LedgerState {
    /// An empty state whose first customer account gets serial 1.
    pub fn new() -> Self {
        Self { next_account_serial: 1, ..Self::default() }
    }

    /// Writes the effects of a decided command into the state.
    pub fn apply(&mut self, effects: &Effects) {
        for (_, c) in &effects.customers {
            self.insert_customer(c.clone());
        }
        for (_, a) in &effects.accounts {
            self.insert_account(a.clone());
        }
        for (_, t) in &effects.transfers {
            self.insert_transfer(t.clone());
        }
        for (_, r) in &effects.services {
            self.insert_service(r.clone());
        }
    }

    /// Adds or replaces a service record.
    pub fn insert_service(&mut self, r: ServiceRecord) {
        self.services.insert(r.id, r);
    }

    /// Whether the service record `id` is loaded.
    pub fn has_service(&self, id: ServiceRecordId) -> bool {
        self.services.contains_key(&id)
    }

    /// All loaded service records.
    pub fn services(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.services.values()
    }

    /// Adds or replaces a customer.
    pub fn insert_customer(&mut self, c: Customer) {
        self.usernames.insert(c.username.clone(), c.id);
        self.customers.insert(c.id, c);
    }

    /// Adds or replaces an account, keeping the next serial above every number given from the
    /// customers' range (customer accounts and loans' receivables).
    pub fn insert_account(&mut self, a: Account) {
        if a.number.serial() < crate::account::SYSTEM_SERIAL_BASE {
            self.next_account_serial = self.next_account_serial.max(a.number.serial() + 1);
        }
        self.accounts.insert(a.id, a);
    }

    /// Adds or replaces a transfer.
    pub fn insert_transfer(&mut self, t: Transfer) {
        self.transfers.insert(t.id, t);
    }

    /// Drops every transfer and service record from the state: a cache bounding its size. The
    /// rules then ask for a forgotten one again through `keys`.
    pub fn clear_transfers(&mut self) {
        self.transfers.clear();
        self.services.clear();
    }

    /// Sets the next account serial, if higher than the current one.
    pub fn raise_next_account_serial(&mut self, serial: u64) {
        self.next_account_serial = self.next_account_serial.max(serial);
    }

    /// Whether a customer is loaded.
    pub fn has_customer(&self, id: CustomerId) -> bool {
        self.customers.contains_key(&id)
    }

    /// Whether an account is loaded.
    pub fn has_account(&self, id: AccountId) -> bool {
        self.accounts.contains_key(&id)
    }

    /// Whether a transfer is loaded.
    pub fn has_transfer(&self, id: TransferId) -> bool {
        self.transfers.contains_key(&id)
    }

    /// Whether a username's owner is loaded.
    pub fn has_username(&self, username: &Username) -> bool {
        self.usernames.contains_key(username)
    }

    /// All loaded accounts.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// All loaded customers.
    pub fn customers(&self) -> impl Iterator<Item = &Customer> {
        self.customers.values()
    }

    /// All loaded transfers.
    pub fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.values()
    }

    /// Number of loaded transfers.
    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }
}

impl LedgerView for LedgerState {
    fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    fn transfer(&self, id: TransferId) -> Option<&Transfer> {
        self.transfers.get(&id)
    }

    fn customer(&self, id: CustomerId) -> Option<&Customer> {
        self.customers.get(&id)
    }

    fn customer_by_username(&self, username: &Username) -> Option<CustomerId> {
        self.usernames.get(username).copied()
    }

    fn next_account_serial(&self) -> u64 {
        self.next_account_serial
    }

    fn service_record(&self, id: ServiceRecordId) -> Option<&ServiceRecord> {
        self.services.get(&id)
    }
}
