//! The harness the cases share: a store on a manual clock, the records a case made, snapshots
//! that prove a rejected command changed nothing, and the ledger-wide invariant check.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::TimeDelta;

use super::StoreFactory;
use super::books::{read_books, read_events, read_history, read_outbox};
use super::fixtures::{deposit, ok, person, request, start_time};
use crate::Timestamp;
use crate::account::{Account, AccountKind, NewAccount, SystemAccount};
use crate::clock::{Clock, ManualClock};
use crate::command::{Command, Executed};
use crate::customer::{Customer, NewCustomer};
use crate::error::{Error, LedgerError};
use crate::event::Event;
use crate::ids::{AccountId, CustomerId, TransferId};
use crate::invariants::{self, Scope};
use crate::money::Currency;
use crate::service::{Ledger, TransferReceipt};
use crate::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Store};
use crate::transfer::{Posting, Transfer, TransferKind, TransferRequest, TransferState};

/// An `InvalidField` error for `field`; the reason is not compared.
pub(crate) fn invalid(field: &'static str) -> LedgerError {
    LedgerError::InvalidField { field, reason: "" }
}

/// A `KindNotAllowed` error for `kind`; the reason is not compared.
pub(crate) fn kind_not_allowed(kind: TransferKind) -> LedgerError {
    LedgerError::KindNotAllowed { kind, reason: "" }
}

/// Whether `actual` is the rule `expected` names. Reasons are prose and not compared.
pub(crate) fn same_rule(actual: &LedgerError, expected: &LedgerError) -> bool {
    match (actual, expected) {
        (LedgerError::InvalidField { field: a, .. }, LedgerError::InvalidField { field: b, .. }) => a == b,
        (LedgerError::KindNotAllowed { kind: a, .. }, LedgerError::KindNotAllowed { kind: b, .. }) => a == b,
        _ => actual == expected,
    }
}

/// Asserts that `result` is the ledger error `expected`.
pub(crate) fn expect_rule<T: Debug>(what: &str, result: Result<T, Error>, expected: &LedgerError) {
    match result {
        Err(Error::Ledger(actual)) if same_rule(&actual, expected) => {}
        other => panic!("{what}: expected Err({expected:?}), got {other:?}"),
    }
}

/// The ids a case made or tried, so that snapshots and the final check cover them.
#[derive(Debug, Default)]
struct Known {
    customers: Vec<CustomerId>,
    accounts: Vec<AccountId>,
    transfers: Vec<TransferId>,
    currencies: BTreeSet<Currency>,
}

/// Everything a case can observe of the ledger; equal before and after a rejected command.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    customers: Vec<(CustomerId, Option<Customer>)>,
    accounts_of: Vec<(CustomerId, Vec<Account>)>,
    accounts: Vec<(AccountId, Option<Account>)>,
    transfers: Vec<(TransferId, Option<Transfer>)>,
    postings: Vec<(AccountId, Vec<Posting>)>,
    pending: Vec<(AccountId, Vec<Transfer>)>,
    events: Vec<(AccountId, Vec<Event>)>,
    outbox: Vec<OutboxEntry>,
    totals: Vec<CurrencyTotal>,
}

impl Snapshot {
    /// Asserts that nothing changed between `self` and `after`, naming the first difference.
    fn assert_unchanged(&self, what: &str, after: &Snapshot) {
        assert_eq!(self.customers, after.customers, "{what}: customers changed");
        assert_eq!(self.accounts_of, after.accounts_of, "{what}: the lists of accounts changed");
        assert_eq!(self.accounts, after.accounts, "{what}: accounts changed");
        assert_eq!(self.transfers, after.transfers, "{what}: transfers changed");
        assert_eq!(self.postings, after.postings, "{what}: postings changed");
        assert_eq!(self.pending, after.pending, "{what}: the lists of pending transfers changed");
        assert_eq!(self.events, after.events, "{what}: events changed");
        assert_eq!(self.outbox, after.outbox, "{what}: the outbox changed");
        assert_eq!(self.totals, after.totals, "{what}: the totals changed");
        assert!(self == after, "{what}: the ledger changed");
    }
}

/// A store under test, its clock and its ledger façade.
pub(crate) struct Harness<S: Store + ?Sized> {
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) ledger: Ledger<S>,
    known: Mutex<Known>,
}

impl<S: Store + ?Sized> Harness<S> {
    /// A fresh store from `factory`, its clock at [`start_time`].
    pub(crate) async fn new<F: StoreFactory<S = S>>(factory: &F) -> Self {
        let clock = Arc::new(ManualClock::new(start_time()));
        let store = factory.fresh(Arc::clone(&clock)).await;
        // The rails' clearing accounts are open from the start: the books include them.
        let clearing = crate::external::rail::clearing_accounts();
        let known = Known {
            accounts: clearing.iter().map(|(system, currency)| system.id(*currency)).collect(),
            currencies: clearing.iter().map(|(_, currency)| *currency).collect(),
            ..Known::default()
        };
        let harness = Self { clock, ledger: Ledger::new(store), known: Mutex::new(known) };
        // A fresh store holds only the rails' clearing accounts, empty.
        let totals = ok("totals of a fresh store", harness.store().totals().await);
        let clearing = crate::external::rail::clearing_accounts();
        let expected: Vec<CurrencyTotal> = clearing
            .iter()
            .map(|(_, currency)| CurrencyTotal { currency: *currency, posted_minor: 0, accounts: 1 })
            .collect();
        assert_eq!(totals, expected, "a fresh store must hold only the empty clearing accounts");
        for (system, currency) in clearing {
            let account = ok("a clearing account", harness.store().account(system.id(currency)).await);
            assert!(account.is_some_and(|a| a.posted_minor == 0 && a.last_event_seq == 0), "{system:?} {currency}");
        }
        let outbox = ok("outbox of a fresh store", harness.store().outbox_after(0, PAGE_LEN_MAX).await);
        assert!(outbox.is_empty(), "a fresh store must be empty, has events {outbox:?}");
        harness
    }

    /// The store.
    pub(crate) fn store(&self) -> &S {
        self.ledger.store()
    }

    /// The current time of the clock.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Moves the clock forward.
    pub(crate) fn advance_secs(&self, secs: i64) {
        self.clock.set(self.clock.now() + TimeDelta::seconds(secs));
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Covers a customer id in snapshots and the final check.
    pub(crate) fn track_customer(&self, id: CustomerId) {
        let mut known = self.known();
        if !known.customers.contains(&id) {
            known.customers.push(id);
        }
    }

    /// Covers an account id in snapshots and the final check.
    pub(crate) fn track_account(&self, id: AccountId) {
        let mut known = self.known();
        if !known.accounts.contains(&id) {
            known.accounts.push(id);
        }
    }

    /// Covers a currency's system accounts in snapshots and the final check.
    pub(crate) fn track_currency(&self, currency: Currency) {
        self.known().currencies.insert(currency);
    }

    /// Covers transfer ids in snapshots and the final check.
    pub(crate) fn track_transfers(&self, ids: impl IntoIterator<Item = TransferId>) {
        let mut known = self.known();
        let mut seen: HashSet<TransferId> = known.transfers.iter().copied().collect();
        for id in ids {
            if seen.insert(id) {
                known.transfers.push(id);
            }
        }
    }

    fn track_request(&self, req: &TransferRequest) {
        self.track_transfers([req.id]);
        self.track_account(req.debit_account);
        self.track_account(req.credit_account);
        self.track_currency(req.amount.currency());
    }

    /// Executes a command on the store directly. The ids it names are tracked at once, so that
    /// a snapshot taken before the returned future runs covers them.
    pub(crate) fn execute(&self, cmd: Command) -> impl Future<Output = Result<Executed, Error>> + '_ {
        match &cmd {
            Command::OpenCustomer(c) => self.track_customer(c.id),
            Command::UpdateCustomer { id, .. } => self.track_customer(*id),
            Command::OpenAccount(a) => {
                self.track_account(a.id);
                self.track_customer(a.customer_id);
                self.track_currency(a.currency);
            }
            Command::SetAccountStatus { id, .. } => self.track_account(*id),
            Command::Transfer(t) => self.track_request(t),
            Command::PostPending { id } | Command::VoidPending { id, .. } => self.track_transfers([*id]),
            Command::RequestService(t) | Command::ApplyService { transition: t, .. } => {
                self.track_account(t.record.account_id);
                self.track_currency(t.record.amount.currency());
                self.track_transfers(t.record.transfers.iter().copied());
                for effect in &t.effects {
                    use crate::external::lifecycle::Effect;
                    match effect {
                        Effect::PlaceHold(request) | Effect::Post(request) => self.track_request(request),
                        Effect::OpenReceivable(account) => self.track_account(*account),
                        _ => {}
                    }
                }
            }
        }
        self.store().execute(cmd)
    }

    /// Opens a customer through the façade (tracked at once).
    pub(crate) fn try_open_customer(&self, req: NewCustomer) -> impl Future<Output = Result<Customer, Error>> + '_ {
        self.track_customer(req.id);
        self.ledger.open_customer(req)
    }

    /// Opens a natural person called `username`, which must succeed.
    pub(crate) async fn customer(&self, username: &str) -> Customer {
        ok(&format!("open customer {username}"), self.try_open_customer(person(username)).await)
    }

    /// Opens an account through the façade (tracked at once).
    pub(crate) fn try_open_account(&self, req: NewAccount) -> impl Future<Output = Result<Account, Error>> + '_ {
        self.track_account(req.id);
        self.track_customer(req.customer_id);
        self.track_currency(req.currency);
        self.ledger.open_account(req)
    }

    /// Opens a current account, which must succeed.
    pub(crate) async fn account(&self, customer: CustomerId, currency: Currency, overdraft_minor: i64) -> Account {
        let req = NewAccount {
            id: AccountId::new_v7(),
            customer_id: customer,
            kind: AccountKind::Current,
            currency,
            overdraft_limit_minor: overdraft_minor,
        };
        ok("open account", self.try_open_account(req).await)
    }

    /// A new customer with one current account without overdraft.
    pub(crate) async fn customer_account(&self, username: &str, currency: Currency) -> Account {
        let customer = self.customer(username).await;
        self.account(customer.id, currency, 0).await
    }

    /// Sends a transfer request through the façade (tracked at once).
    pub(crate) fn transfer(&self, req: TransferRequest) -> impl Future<Output = Result<TransferReceipt, Error>> + '_ {
        self.track_request(&req);
        self.ledger.transfer(req)
    }

    /// Funds `account` from its currency's funding account; must succeed.
    pub(crate) async fn fund(&self, account: &Account, amount_minor: i64) -> Transfer {
        let receipt = ok("fund", self.transfer(deposit(account, amount_minor)).await);
        assert!(!receipt.replayed, "a new deposit was answered as a replay");
        receipt.transfer
    }

    /// An internal transfer between two customer accounts (tracked at once).
    pub(crate) fn pay(
        &self,
        from: &Account,
        to: AccountId,
        amount_minor: i64,
    ) -> impl Future<Output = Result<TransferReceipt, Error>> + '_ {
        self.transfer(request(TransferKind::Internal, from.id, to, amount_minor, from.currency))
    }

    /// An account as the store has it now; it must exist.
    pub(crate) async fn get_account(&self, id: AccountId) -> Account {
        ok("read account", self.store().account(id).await).unwrap_or_else(|| panic!("account {id} does not exist"))
    }

    /// A transfer as the store has it now; it must exist.
    pub(crate) async fn get_transfer(&self, id: TransferId) -> Transfer {
        ok("read transfer", self.store().transfer(id).await).unwrap_or_else(|| panic!("transfer {id} does not exist"))
    }

    /// Every posting of an account, newest first, read page by page through `query`'s filters.
    pub(crate) async fn history_all(&self, account: AccountId, query: &HistoryQuery) -> Vec<Posting> {
        read_history(self.store(), account, query).await
    }

    /// Every event of an account, oldest first.
    pub(crate) async fn events(&self, account: AccountId) -> Vec<Event> {
        read_events(self.store(), account, PAGE_LEN_MAX).await
    }

    /// The whole outbox, in commit order.
    pub(crate) async fn outbox(&self) -> Vec<OutboxEntry> {
        read_outbox(self.store(), PAGE_LEN_MAX).await
    }

    /// The ids of every account the case knows of: the ones it made or named, every system
    /// account of its currencies, and every account with an event.
    async fn known_accounts(&self) -> Vec<AccountId> {
        let (mut ids, currencies) = {
            let known = self.known();
            (known.accounts.clone(), known.currencies.clone())
        };
        for currency in currencies {
            ids.extend(SystemAccount::ALL.iter().map(|s| s.id(currency)));
        }
        for entry in self.outbox().await {
            ids.push(entry.event.account_id);
        }
        let mut seen = HashSet::new();
        ids.retain(|id| seen.insert(*id));
        ids
    }

    /// Reads everything the case can observe.
    pub(crate) async fn snapshot(&self) -> Snapshot {
        let (customer_ids, transfer_ids) = {
            let known = self.known();
            (known.customers.clone(), known.transfers.clone())
        };
        let store = self.store();
        let mut customers = Vec::new();
        let mut accounts_of = Vec::new();
        for id in customer_ids {
            customers.push((id, ok("read customer", store.customer(id).await)));
            accounts_of.push((id, ok("read accounts of customer", store.accounts_of(id).await)));
        }
        let mut accounts = Vec::new();
        let mut postings = Vec::new();
        let mut pending = Vec::new();
        let mut events = Vec::new();
        for id in self.known_accounts().await {
            let account = ok("read account", store.account(id).await);
            if account.is_some() {
                postings.push((id, self.history_all(id, &HistoryQuery::default()).await));
                pending.push((id, ok("read pending transfers", store.pending_of(id, PAGE_LEN_MAX).await)));
                events.push((id, self.events(id).await));
            }
            accounts.push((id, account));
        }
        let mut transfers = Vec::new();
        for id in transfer_ids {
            transfers.push((id, ok("read transfer", store.transfer(id).await)));
        }
        Snapshot {
            customers,
            accounts_of,
            accounts,
            transfers,
            postings,
            pending,
            events,
            outbox: self.outbox().await,
            totals: ok("totals", store.totals().await),
        }
    }

    /// Runs `op`, which must fail with `expected` and change nothing.
    pub(crate) async fn rejects<T: Debug>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, Error>>,
        expected: LedgerError,
    ) {
        let before = self.snapshot().await;
        expect_rule(what, op.await, &expected);
        let after = self.snapshot().await;
        before.assert_unchanged(what, &after);
    }

    /// Runs `op`, which must succeed and change nothing (a replay); returns its result.
    pub(crate) async fn unchanged<T: Debug>(&self, what: &str, op: impl Future<Output = Result<T, Error>>) -> T {
        let before = self.snapshot().await;
        let value = ok(what, op.await);
        let after = self.snapshot().await;
        before.assert_unchanged(what, &after);
        value
    }

    /// Re-reads the whole ledger and checks it with [`invariants::check`]: every account the case
    /// knows of (every account there is) with its history, every transfer it made, the outbox and
    /// the totals. Then what the invariants do not cover, since it is about the store's reads:
    /// each payer's list of pending transfers, and customers found by id and by username. Every
    /// case ends with it.
    pub(crate) async fn check_invariants(&self) {
        let store = self.store();
        let mut books = read_books(store, &self.known_accounts().await, Scope::Ledger).await;
        let transfer_ids = self.known().transfers.clone();
        let mut transfers = Vec::new();
        for id in transfer_ids {
            if let Some(t) = ok("read transfer", store.transfer(id).await) {
                assert_eq!(t.id, id, "transfer {id} was read back with another id");
                transfers.push(t);
            }
        }
        books.transfers = Some(transfers);
        if let Err(violation) = invariants::check(&books) {
            panic!("the ledger after the case: {violation}");
        }
        let transfers = books.transfers.unwrap_or_default();
        for a in books.accounts.iter().map(|a| &a.account) {
            let mut expected: Vec<Transfer> = transfers
                .iter()
                .filter(|t| t.state == TransferState::Pending && t.debit_account == a.id)
                .cloned()
                .collect();
            expected.sort_by_key(|t| (t.created_at, t.id));
            expected.truncate(usize::try_from(PAGE_LEN_MAX).unwrap_or(usize::MAX));
            assert_eq!(
                ok("pending transfers", store.pending_of(a.id, PAGE_LEN_MAX).await),
                expected,
                "account {}: pending_of must list the pending transfers it pays, oldest first",
                a.id
            );
        }

        // Customers are found by id and by username.
        let customer_ids = self.known().customers.clone();
        for id in customer_ids {
            if let Some(c) = ok("read customer", store.customer(id).await) {
                let by_name = ok("customer by username", store.customer_by_username(&c.username).await);
                assert_eq!(by_name.as_ref(), Some(&c), "customer {id} is not found by its username");
                for a in ok("accounts of", store.accounts_of(id).await) {
                    assert_eq!(a.customer_id(), Some(id), "accounts_of({id}) lists another customer's account");
                }
            }
        }
    }
}
