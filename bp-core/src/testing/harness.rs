//! The harness the cases share: a store on a manual clock, the records a case made, snapshots
//! that prove a rejected command changed nothing, and the ledger-wide invariant check.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{NaiveDate, TimeDelta};

use super::StoreFactory;
use crate::Timestamp;
use crate::account::{Account, AccountKind, NewAccount, SystemAccount};
use crate::clock::{Clock, ManualClock};
use crate::command::{Command, Executed};
use crate::customer::{
    Contact, Customer, DocumentKind, IdentityDocument, Incorporation, KycStatus, LegalEntityProfile, NewCustomer,
    Party, PersonProfile, Username,
};
use crate::error::{Error, LedgerError};
use crate::event::{EVENT_VERSION, Event, EventBody};
use crate::ids::{AccountId, CustomerId, EventId, TransferId};
use crate::money::{Currency, Money};
use crate::service::{Ledger, TransferReceipt};
use crate::store::{CurrencyTotal, HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Store};
use crate::transfer::{Direction, Posting, Transfer, TransferKind, TransferRequest, TransferState};

/// Where every case's clock starts: 2026-01-01T00:00:00Z.
const START_UNIX_SECS: i64 = 1_767_225_600;

/// Upper bound of pages read by one paging loop, so that a store whose cursor never ends fails
/// the case instead of hanging it.
const PAGES_MAX: usize = 100_000;

/// The time every case starts at.
pub(crate) fn start_time() -> Timestamp {
    chrono::DateTime::from_timestamp(START_UNIX_SECS, 0).expect("a valid start time")
}

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

/// Unwraps `result`, naming the step on failure.
pub(crate) fn ok<T, E: Debug>(what: &str, result: Result<T, E>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: expected Ok, got Err({e:?})"),
    }
}

/// A JSON object from a `json!` literal.
pub(crate) fn json_map(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// A valid request to open a natural person, with every optional field filled.
pub(crate) fn person(username: &str) -> NewCustomer {
    NewCustomer {
        id: CustomerId::new_v7(),
        username: ok("username", Username::parse(username)),
        party: Party::Person(PersonProfile {
            given_name: "Ada".to_owned(),
            family_name: "Lovelace Byron".to_owned(),
            date_of_birth: NaiveDate::from_ymd_opt(1990, 12, 10),
        }),
        documents: vec![IdentityDocument {
            kind: DocumentKind::Passport,
            number: "XDA123456".to_owned(),
            issuing_country: "ES".to_owned(),
            expires_on: NaiveDate::from_ymd_opt(2031, 6, 30),
        }],
        contact: Contact {
            email: Some(format!("{username}@example.org")),
            phone: Some("+34600123456".to_owned()),
            address: Some("Calle Mayor 1, 28013 Madrid".to_owned()),
        },
        photo_ref: Some(format!("photos/{username}.jpg")),
        kyc: KycStatus::Verified,
        extra: json_map(serde_json::json!({ "segment": "retail", "marketing": { "email": true } })),
    }
}

/// A valid request to open a legal entity.
pub(crate) fn company(username: &str) -> NewCustomer {
    NewCustomer {
        id: CustomerId::new_v7(),
        username: ok("username", Username::parse(username)),
        party: Party::LegalEntity(LegalEntityProfile {
            legal_name: "Acme Iberia S.L.".to_owned(),
            tax_id: "B12345678".to_owned(),
            legal_representative: "Grace Hopper".to_owned(),
            incorporation: Incorporation {
                country: "ES".to_owned(),
                date: NaiveDate::from_ymd_opt(2011, 3, 14).expect("a valid date"),
                registry_number: "M-123456".to_owned(),
            },
        }),
        documents: Vec::new(),
        contact: Contact { email: Some(format!("{username}@acme.example")), phone: None, address: None },
        photo_ref: None,
        kyc: KycStatus::Pending,
        extra: serde_json::Map::new(),
    }
}

/// An immediate transfer request.
pub(crate) fn request(
    kind: TransferKind,
    debit: AccountId,
    credit: AccountId,
    amount_minor: i64,
    currency: Currency,
) -> TransferRequest {
    TransferRequest {
        id: TransferId::new_v7(),
        kind,
        debit_account: debit,
        credit_account: credit,
        amount: Money::new(amount_minor, currency),
        reference: None,
        hold_until: None,
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
        let harness = Self { clock, ledger: Ledger::new(store), known: Mutex::new(Known::default()) };
        let totals = ok("totals of a fresh store", harness.store().totals().await);
        assert!(totals.is_empty(), "a fresh store must be empty, has totals {totals:?}");
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
        let req = request(
            TransferKind::Deposit,
            SystemAccount::Funding.id(account.currency),
            account.id,
            amount_minor,
            account.currency,
        );
        let receipt = ok("fund", self.transfer(req).await);
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
        read_events(self.store(), account).await
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

    /// Re-reads the whole ledger and checks its invariants. Every case ends with it.
    pub(crate) async fn check_invariants(&self) {
        let store = self.store();
        let accounts_known = self.known_accounts().await;
        let outbox = self.outbox().await;

        // The outbox holds every event exactly once, and each account's in sequence order.
        let mut outbox_ids = HashSet::new();
        let mut outbox_by_account: HashMap<AccountId, Vec<&Event>> = HashMap::new();
        for entry in &outbox {
            assert!(outbox_ids.insert(entry.event.id), "event {} is twice in the outbox", entry.event.id);
            outbox_by_account.entry(entry.event.account_id).or_default().push(&entry.event);
        }

        let mut accounts = Vec::new();
        let mut all_postings: HashMap<TransferId, Vec<Posting>> = HashMap::new();
        let mut events_total = 0usize;
        for id in accounts_known {
            let Some(account) = ok("read account", store.account(id).await) else {
                assert!(!outbox_by_account.contains_key(&id), "account {id} has events but does not exist");
                continue;
            };
            assert_eq!(account.id, id, "account {id} was read back with another id");
            let events = self.events(id).await;
            events_total += events.len();
            check_account_events(&account, &events);
            let in_outbox: Vec<&Event> = outbox_by_account.get(&id).cloned().unwrap_or_default();
            assert_eq!(
                in_outbox,
                events.iter().collect::<Vec<_>>(),
                "account {id}: the outbox must hold its events once each, in sequence order"
            );
            let postings = self.history_all(id, &HistoryQuery::default()).await;
            check_account_postings(&account, &postings, &events);
            for p in postings {
                all_postings.entry(p.transfer_id).or_default().push(p);
            }
            accounts.push(account);
        }
        assert_eq!(events_total, outbox.len(), "the outbox holds events of accounts that do not exist");

        // Every currency sums to zero, over exactly the accounts that exist.
        let totals = ok("totals", store.totals().await);
        let mut expected: HashMap<Currency, (i128, u64)> = HashMap::new();
        for a in &accounts {
            let e = expected.entry(a.currency).or_default();
            e.0 += i128::from(a.posted_minor);
            e.1 += 1;
        }
        let mut seen_currencies = HashSet::new();
        for t in &totals {
            assert!(seen_currencies.insert(t.currency), "totals list {} twice", t.currency);
            assert_eq!(t.posted_minor, 0, "the balances of {} must sum to zero: {totals:?}", t.currency);
            let (sum, count) = expected.get(&t.currency).copied().unwrap_or_default();
            assert_eq!(t.posted_minor, sum, "totals of {} disagree with the accounts", t.currency);
            assert_eq!(t.accounts, count, "totals of {} count other accounts than exist", t.currency);
        }
        assert_eq!(seen_currencies.len(), expected.len(), "totals miss a currency: {totals:?}");

        // Transfers: posted ones have their two lines, others none; holds are the pending ones,
        // and so are the payer's lists of pending transfers.
        let transfer_ids = self.known().transfers.clone();
        let mut held: HashMap<AccountId, i64> = HashMap::new();
        let mut pending: HashMap<AccountId, Vec<Transfer>> = HashMap::new();
        for id in transfer_ids {
            let Some(t) = ok("read transfer", store.transfer(id).await) else {
                assert!(!all_postings.contains_key(&id), "transfer {id} has postings but does not exist");
                continue;
            };
            assert_eq!(t.id, id, "transfer {id} was read back with another id");
            let lines = all_postings.get(&id).map(Vec::as_slice).unwrap_or_default();
            match t.state {
                TransferState::Posted => check_transfer_lines(&t, lines),
                TransferState::Pending => {
                    assert!(lines.is_empty(), "pending transfer {id} has postings");
                    *held.entry(t.debit_account).or_default() += t.amount.amount_minor();
                    pending.entry(t.debit_account).or_default().push(t);
                }
                TransferState::Voided | TransferState::Failed => {
                    assert!(lines.is_empty(), "{:?} transfer {id} has postings", t.state);
                }
            }
        }
        for a in &accounts {
            assert_eq!(
                a.held_minor,
                held.get(&a.id).copied().unwrap_or(0),
                "account {}: held must be the sum of its pending transfers",
                a.id
            );
            let mut expected = pending.remove(&a.id).unwrap_or_default();
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

/// Checks an account's own fields and its events: numbered 1, 2, 3, … with derived ids.
fn check_account_events(account: &Account, events: &[Event]) {
    let id = account.id;
    assert!(account.held_minor >= 0, "account {id}: negative holds");
    assert!(account.overdraft_limit_minor >= 0, "account {id}: negative overdraft limit");
    if account.kind == AccountKind::System {
        assert!(account.is_system(), "account {id}: kind System but a customer owner");
    } else {
        let available = i128::from(account.posted_minor) - i128::from(account.held_minor);
        assert!(
            available >= -i128::from(account.overdraft_limit_minor),
            "account {id}: available {available} is below its overdraft limit"
        );
    }
    assert_eq!(
        events.len(),
        usize::try_from(account.last_event_seq).unwrap_or(usize::MAX),
        "account {id}: the number of events must be last_event_seq"
    );
    for (i, e) in (1u64..).zip(events) {
        assert_eq!(e.seq, i, "account {id}: event numbers must be 1, 2, 3, … without gaps");
        assert_eq!(e.account_id, id, "account {id}: events_after returned another account's event");
        assert_eq!(e.id, EventId::derive(id, e.seq), "account {id}: event {} has an id not derived", e.seq);
        assert_eq!(e.version, EVENT_VERSION, "account {id}: event format version");
    }
}

/// Checks an account's postings against its balance and its `transfer.posted` events.
fn check_account_postings(account: &Account, postings: &[Posting], events: &[Event]) {
    let id = account.id;
    let mut running: i64 = 0;
    let mut last_seq = 0;
    for p in postings.iter().rev() {
        assert_eq!(p.account_id, id, "account {id}: history lists another account's posting");
        assert!(p.seq > last_seq, "account {id}: history is not newest first");
        last_seq = p.seq;
        assert!(p.amount.is_positive(), "account {id}: posting amounts are positive");
        assert_eq!(p.amount.currency(), account.currency, "account {id}: posting in another currency");
        running =
            running.checked_add(p.signed_minor()).unwrap_or_else(|| panic!("account {id}: the postings overflow"));
        assert_eq!(
            p.balance_after,
            Money::new(running, account.currency),
            "account {id}: balance_after of line {} is not the running sum",
            p.seq
        );
        let event = usize::try_from(p.seq)
            .ok()
            .and_then(|s| s.checked_sub(1))
            .and_then(|i| events.get(i))
            .unwrap_or_else(|| panic!("account {id}: posting {} has no event", p.seq));
        match &event.body {
            EventBody::TransferPosted { transfer_id, kind, direction, amount, counterparty, balances } => {
                assert_eq!(
                    (*transfer_id, *kind, *direction, *amount, *counterparty),
                    (p.transfer_id, p.kind, p.direction, p.amount, p.counterparty),
                    "account {id}: posting {} disagrees with its event",
                    p.seq
                );
                assert_eq!(balances.posted, p.balance_after, "account {id}: event {} balance", p.seq);
                assert_eq!(event.at, p.posted_at, "account {id}: event {} time", p.seq);
            }
            other => panic!("account {id}: posting {} has event {other:?}", p.seq),
        }
    }
    assert_eq!(running, account.posted_minor, "account {id}: the balance must be the sum of its postings");
    let posted_events = events.iter().filter(|e| matches!(e.body, EventBody::TransferPosted { .. })).count();
    assert_eq!(posted_events, postings.len(), "account {id}: every transfer.posted event has its posting");
}

/// Checks that a posted transfer has exactly its debit line and its credit line.
fn check_transfer_lines(t: &Transfer, lines: &[Posting]) {
    let id = t.id;
    assert_eq!(lines.len(), 2, "posted transfer {id} must have exactly two postings, has {lines:?}");
    let debit = lines.iter().find(|p| p.direction == Direction::Debit);
    let credit = lines.iter().find(|p| p.direction == Direction::Credit);
    let (Some(debit), Some(credit)) = (debit, credit) else {
        panic!("posted transfer {id} must have one debit and one credit line: {lines:?}");
    };
    for (line, account, counterparty) in
        [(debit, t.debit_account, t.credit_account), (credit, t.credit_account, t.debit_account)]
    {
        assert_eq!(line.account_id, account, "transfer {id}: line on the wrong account");
        assert_eq!(line.counterparty, counterparty, "transfer {id}: line with the wrong counterparty");
        assert_eq!(line.amount, t.amount, "transfer {id}: line amount");
        assert_eq!(line.kind, t.kind, "transfer {id}: line kind");
        assert_eq!(line.reference, t.reference, "transfer {id}: line reference");
        assert_eq!(Some(line.posted_at), t.finished_at, "transfer {id}: line time");
    }
}

/// Every posting of `account` that `query` selects, newest first, following `next_cursor`.
pub(crate) async fn read_history<S: Store + ?Sized>(
    store: &S,
    account: AccountId,
    query: &HistoryQuery,
) -> Vec<Posting> {
    let mut q = query.clone();
    if q.limit.is_none() {
        q.limit = Some(PAGE_LEN_MAX);
    }
    let limit = usize::try_from(q.limit()).unwrap_or(usize::MAX);
    let mut all: Vec<Posting> = Vec::new();
    for _ in 0..PAGES_MAX {
        let page = ok("read history", store.postings(account, &q).await);
        assert!(page.items.len() <= limit, "a history page is longer than its limit");
        all.extend(page.items);
        match page.next_cursor {
            None => return all,
            Some(cursor) => {
                assert!(
                    q.before_seq.is_none_or(|c| cursor < c),
                    "history cursors must go down: {cursor} after {:?}",
                    q.before_seq
                );
                q.before_seq = Some(cursor);
            }
        }
    }
    panic!("history of {account} has more than {PAGES_MAX} pages")
}

/// Every event of `account`, oldest first.
pub(crate) async fn read_events<S: Store + ?Sized>(store: &S, account: AccountId) -> Vec<Event> {
    let mut all: Vec<Event> = Vec::new();
    for _ in 0..PAGES_MAX {
        let after = all.last().map_or(0, |e| e.seq);
        let page = ok("read events", store.events_after(account, after, PAGE_LEN_MAX).await);
        assert!(page.len() <= usize::try_from(PAGE_LEN_MAX).unwrap_or(usize::MAX), "events page too long");
        if page.is_empty() {
            return all;
        }
        for e in page {
            assert!(e.seq > all.last().map_or(after, |l| l.seq), "events_after must go up from after_seq");
            all.push(e);
        }
    }
    panic!("events of {account} have more than {PAGES_MAX} pages")
}

/// The whole outbox, in pages of `page_len`.
pub(crate) async fn read_outbox<S: Store + ?Sized>(store: &S, page_len: u32) -> Vec<OutboxEntry> {
    let mut all: Vec<OutboxEntry> = Vec::new();
    for _ in 0..PAGES_MAX * 10 {
        let after = all.last().map_or(0, |e| e.position);
        let page = ok("read outbox", store.outbox_after(after, page_len).await);
        assert!(page.len() <= usize::try_from(page_len).unwrap_or(usize::MAX), "outbox page too long");
        if page.is_empty() {
            return all;
        }
        for e in page {
            assert!(e.position > all.last().map_or(after, |l| l.position), "outbox positions must go up from `after`");
            all.push(e);
        }
    }
    panic!("the outbox has more than {} pages", PAGES_MAX * 10)
}
