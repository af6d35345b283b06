//! The rules of the bank as pure functions: every store decides every command here, on the state
//! it has loaded, and only writes the effects this returns. Nothing here does I/O.

use crate::Timestamp;
use crate::account::{
    Account, AccountKind, AccountOwner, AccountStatus, NewAccount, SYSTEM_SERIAL_BASE, SystemAccount,
};
use crate::account_number::AccountNumber;
use crate::clock::truncate_to_micros;
use crate::command::{Command, Executed, Keys, Outcome};
use crate::customer::{
    Contact, Customer, CustomerUpdate, DOCUMENTS_MAX, EXTRA_BYTES_MAX, IdentityDocument, NewCustomer, Party,
    TEXT_CHARS_MAX, Username,
};
use crate::error::LedgerError;
use crate::event::{EVENT_VERSION, Event, EventBody};
use crate::external::lifecycle::{Effect, Transition};
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::money::{Currency, Money};
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use crate::transfer::{
    Direction, Posting, REFERENCE_CHARS_MAX, Transfer, TransferKind, TransferRequest, TransferState, VoidReason,
};

/// What the rules need to read. Stores load what [`keys`] names before calling [`decide`].
pub trait LedgerView {
    /// An account, if it exists (and is loaded).
    fn account(&self, id: AccountId) -> Option<&Account>;
    /// A transfer, if it exists (and is loaded).
    fn transfer(&self, id: TransferId) -> Option<&Transfer>;
    /// A customer, if it exists (and is loaded).
    fn customer(&self, id: CustomerId) -> Option<&Customer>;
    /// The customer who has `username`, if any.
    fn customer_by_username(&self, username: &Username) -> Option<CustomerId>;
    /// The serial the next customer account gets.
    fn next_account_serial(&self) -> u64;
    /// A service record, if it exists (and is loaded).
    fn service_record(&self, id: ServiceRecordId) -> Option<&ServiceRecord>;
}

/// Whether a record is new or replaces the stored one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// A new record.
    Insert,
    /// The new state of an existing record.
    Update,
}

/// What a command writes. A store writes all of it atomically, or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Customers written.
    pub customers: Vec<(Write, Customer)>,
    /// Accounts written (their final state after the command).
    pub accounts: Vec<(Write, Account)>,
    /// Transfers written.
    pub transfers: Vec<(Write, Transfer)>,
    /// Double-entry lines added.
    pub postings: Vec<Posting>,
    /// Events added: the outbox.
    pub events: Vec<Event>,
    /// Service records written.
    pub services: Vec<(Write, ServiceRecord)>,
}

impl Effects {
    /// True when the command changes nothing (a replay).
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
            && self.accounts.is_empty()
            && self.transfers.is_empty()
            && self.postings.is_empty()
            && self.events.is_empty()
            && self.services.is_empty()
    }

    /// Empties every list, keeping the memory: for [`decide_reusing`].
    pub fn clear(&mut self) {
        self.customers.clear();
        self.accounts.clear();
        self.transfers.clear();
        self.postings.clear();
        self.events.clear();
        self.services.clear();
    }
}

/// A decided command: its answer, and what to write for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The answer to give once the effects are durable.
    pub executed: Executed,
    /// What to write.
    pub effects: Effects,
}

/// The ids `cmd` needs. Call it, load what is missing, and call it again: the second call adds the
/// accounts of a transfer named by `PostPending` or `VoidPending` once that transfer is loaded.
pub fn keys(cmd: &Command, view: &impl LedgerView) -> Keys {
    let mut k = Keys::default();
    match cmd {
        Command::OpenCustomer(c) => {
            k.customers.push(c.id);
            k.usernames.push(c.username.clone());
        }
        Command::UpdateCustomer { id, .. } => k.customers.push(*id),
        Command::OpenAccount(a) => {
            k.accounts.push(a.id);
            k.customers.push(a.customer_id);
        }
        Command::SetAccountStatus { id, .. } => k.accounts.push(*id),
        Command::Transfer(t) => {
            k.transfers.push(t.id);
            k.accounts.extend([t.debit_account, t.credit_account]);
        }
        Command::PostPending { id } | Command::VoidPending { id, .. } => {
            k.transfers.push(*id);
            if let Some(t) = view.transfer(*id) {
                k.accounts.extend([t.debit_account, t.credit_account]);
            }
        }
        Command::RequestService(t) => {
            k.services.push(t.record.id);
            k.accounts.push(t.record.account_id);
            for effect in &t.effects {
                if let Effect::PlaceHold(hold) = effect {
                    k.transfers.push(hold.id);
                    k.accounts.extend([hold.debit_account, hold.credit_account]);
                }
            }
        }
        Command::ApplyService { id, transition, .. } => {
            k.services.push(*id);
            k.accounts.push(transition.record.account_id);
            for effect in &transition.effects {
                match effect {
                    Effect::PostHold(t) | Effect::VoidHold(t) => {
                        k.transfers.push(*t);
                        if let Some(t) = view.transfer(*t) {
                            k.accounts.extend([t.debit_account, t.credit_account]);
                        }
                    }
                    Effect::Post(t) => {
                        k.transfers.push(t.id);
                        k.accounts.extend([t.debit_account, t.credit_account]);
                    }
                    Effect::OpenReceivable(a) => k.accounts.push(*a),
                    Effect::PlaceHold(_)
                    | Effect::Submit(_)
                    | Effect::QueryStatus(_)
                    | Effect::Decide(_)
                    | Effect::QueryDecision(_)
                    | Effect::Emit(_) => {}
                }
            }
        }
    }
    k
}

/// Decides `cmd` against `view` at time `now`: the answer and the effects, or the rule it breaks.
pub fn decide(view: &impl LedgerView, cmd: &Command, now: Timestamp) -> Result<Decision, LedgerError> {
    decide_reusing(view, cmd, now, Effects::default())
}

/// [`decide`], filling the effects of a new transfer into `spare`'s lists (emptied first) rather
/// than new ones: a writer that decides many commands in turn hands back each decision's effects
/// once written and allocates its lists once. The decision is the same as `decide`'s.
pub fn decide_reusing(
    view: &impl LedgerView,
    cmd: &Command,
    now: Timestamp,
    spare: Effects,
) -> Result<Decision, LedgerError> {
    match cmd {
        Command::OpenCustomer(req) => open_customer(view, req, now),
        Command::UpdateCustomer { id, expected_version, update } => {
            update_customer(view, *id, *expected_version, update, now)
        }
        Command::OpenAccount(req) => open_account(view, req, now),
        Command::SetAccountStatus { id, status } => set_account_status(view, *id, *status, now),
        Command::Transfer(req) => transfer(view, req, now, spare),
        Command::PostPending { id } => post_pending(view, *id, now),
        Command::VoidPending { id, reason } => void_pending(view, *id, *reason, now),
        Command::RequestService(t) => request_service(view, t, now),
        Command::ApplyService { id, expected_version, transition } => {
            apply_service(view, *id, *expected_version, transition, now)
        }
    }
}

fn replay(outcome: Outcome) -> Decision {
    Decision { executed: Executed { outcome, replayed: true }, effects: Effects::default() }
}

fn applied(outcome: Outcome, effects: Effects) -> Decision {
    Decision { executed: Executed { outcome, replayed: false }, effects }
}

// ---------------------------------------------------------------------------------------------
// Field validation

fn check_text(field: &'static str, value: &str, allow_empty: bool) -> Result<(), LedgerError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(LedgerError::InvalidField { field, reason: "must not be empty" });
    }
    if value.chars().count() > TEXT_CHARS_MAX {
        return Err(LedgerError::InvalidField { field, reason: "longer than 200 characters" });
    }
    if value.chars().any(char::is_control) {
        return Err(LedgerError::InvalidField { field, reason: "contains control characters" });
    }
    Ok(())
}

fn check_country(field: &'static str, value: &str) -> Result<(), LedgerError> {
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(LedgerError::InvalidField { field, reason: "must be an ISO 3166-1 alpha-2 code" })
    }
}

fn check_party(party: &Party) -> Result<(), LedgerError> {
    match party {
        Party::Person(p) => {
            check_text("given_name", &p.given_name, false)?;
            check_text("family_name", &p.family_name, false)
        }
        Party::LegalEntity(l) => {
            check_text("legal_name", &l.legal_name, false)?;
            check_text("tax_id", &l.tax_id, false)?;
            check_text("legal_representative", &l.legal_representative, false)?;
            check_country("incorporation.country", &l.incorporation.country)?;
            check_text("incorporation.registry_number", &l.incorporation.registry_number, false)
        }
    }
}

fn check_documents(documents: &[IdentityDocument]) -> Result<(), LedgerError> {
    if documents.len() > DOCUMENTS_MAX {
        return Err(LedgerError::InvalidField { field: "documents", reason: "more than 16 documents" });
    }
    for d in documents {
        check_text("documents.number", &d.number, false)?;
        check_country("documents.issuing_country", &d.issuing_country)?;
    }
    Ok(())
}

fn check_contact(contact: &Contact) -> Result<(), LedgerError> {
    if let Some(email) = &contact.email {
        check_text("contact.email", email, false)?;
        if !email.contains('@') {
            return Err(LedgerError::InvalidField { field: "contact.email", reason: "must contain '@'" });
        }
    }
    if let Some(phone) = &contact.phone {
        let digits = phone.strip_prefix('+').unwrap_or("");
        if !(2..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LedgerError::InvalidField {
                field: "contact.phone",
                reason: "must be in E.164 form, e.g. +34600123456",
            });
        }
    }
    if let Some(address) = &contact.address {
        check_text("contact.address", address, false)?;
    }
    Ok(())
}

fn check_extra(extra: &serde_json::Map<String, serde_json::Value>) -> Result<(), LedgerError> {
    let len = serde_json::to_vec(extra).map(|v| v.len()).unwrap_or(usize::MAX);
    if len > EXTRA_BYTES_MAX {
        return Err(LedgerError::InvalidField { field: "extra", reason: "larger than 16 KiB" });
    }
    Ok(())
}

fn check_photo_ref(photo_ref: Option<&String>) -> Result<(), LedgerError> {
    photo_ref.map_or(Ok(()), |p| check_text("photo_ref", p, false))
}

/// Checks every field of a new customer.
pub fn validate_new_customer(req: &NewCustomer) -> Result<(), LedgerError> {
    check_party(&req.party)?;
    check_documents(&req.documents)?;
    check_contact(&req.contact)?;
    check_photo_ref(req.photo_ref.as_ref())?;
    check_extra(&req.extra)
}

/// Checks a transfer request on its own, before any account is looked at.
pub fn validate_transfer_request(req: &TransferRequest, now: Timestamp) -> Result<(), LedgerError> {
    if !req.amount.is_positive() {
        return Err(LedgerError::NonPositiveAmount);
    }
    if req.debit_account == req.credit_account {
        return Err(LedgerError::SameAccount);
    }
    if let Some(reference) = &req.reference {
        if reference.chars().count() > REFERENCE_CHARS_MAX {
            return Err(LedgerError::InvalidField { field: "reference", reason: "longer than 140 characters" });
        }
        if reference.chars().any(char::is_control) {
            return Err(LedgerError::InvalidField { field: "reference", reason: "contains control characters" });
        }
    }
    // Compared as recorded: stores keep times to the microsecond.
    if req.hold_until.is_some_and(|t| truncate_to_micros(t) <= now) {
        return Err(LedgerError::InvalidField { field: "hold_until", reason: "must be in the future" });
    }
    Ok(())
}

/// Which system account, if any, a transfer of `kind` must use, and on which side.
/// Returns `(system account, true if it is the debit side)`. Kinds that join two system
/// accounts as well ([`TransferKind::International`], [`TransferKind::Loan`]) are checked by
/// [`check_kind`].
pub fn system_side(kind: TransferKind) -> Option<(SystemAccount, Option<bool>)> {
    match kind {
        TransferKind::Internal => None,
        TransferKind::Deposit => Some((SystemAccount::Funding, Some(true))),
        TransferKind::Withdrawal => Some((SystemAccount::Funding, Some(false))),
        TransferKind::Fee => Some((SystemAccount::Fees, Some(false))),
        TransferKind::Interbank => Some((SystemAccount::InterbankClearing, None)),
        TransferKind::International => Some((SystemAccount::InternationalClearing, None)),
        TransferKind::Loan => Some((SystemAccount::LoanFunding, None)),
        TransferKind::Fx => Some((SystemAccount::FxPosition, None)),
        TransferKind::Interest => Some((SystemAccount::InterestIncome, Some(false))),
    }
}

/// The bank's own legs that join two system accounts, as `(kind, debit, credit)`: the FX
/// position paying out the converted amount to the international clearing account (an
/// international payment's target-currency leg), and a loan's receivable booked against the
/// loan funding account at disbursement.
const SYSTEM_LEGS: [(TransferKind, SystemAccount, SystemAccount); 2] = [
    (TransferKind::International, SystemAccount::FxPosition, SystemAccount::InternationalClearing),
    (TransferKind::Loan, SystemAccount::LoanReceivable, SystemAccount::LoanFunding),
];

/// Checks that the transfer kind fits the two accounts: internal transfers join two customer
/// accounts; every other kind joins a customer account with its own system account, or is one
/// of the bank's own legs ([`SYSTEM_LEGS`]); a customer repays a loan's principal to the loan's
/// receivable account.
pub fn check_kind(kind: TransferKind, debit: &Account, credit: &Account) -> Result<(), LedgerError> {
    let is = |a: &Account, s: SystemAccount| a.owner == AccountOwner::Bank { system: s };
    if SYSTEM_LEGS.iter().any(|&(k, d, c)| k == kind && is(debit, d) && is(credit, c))
        || (kind == TransferKind::Loan && !debit.is_system() && is(credit, SystemAccount::LoanReceivable))
    {
        return Ok(());
    }
    match system_side(kind) {
        None if debit.is_system() || credit.is_system() => {
            Err(LedgerError::KindNotAllowed { kind, reason: "must join two customer accounts" })
        }
        None => Ok(()),
        Some((system, side)) => {
            let system_debit = is(debit, system) && !credit.is_system();
            let system_credit = is(credit, system) && !debit.is_system();
            let ok = match side {
                Some(true) => system_debit,
                Some(false) => system_credit,
                None => system_debit || system_credit,
            };
            if ok {
                Ok(())
            } else {
                Err(LedgerError::KindNotAllowed {
                    kind,
                    reason: "must join a customer account with the bank's account for that kind",
                })
            }
        }
    }
}

/// Checks that money can move on `account` in `amount`'s currency.
pub fn check_account_usable(account: &Account, amount: Money) -> Result<(), LedgerError> {
    if account.currency != amount.currency() {
        return Err(LedgerError::CurrencyMismatch {
            account: account.id,
            expected: account.currency,
            actual: amount.currency(),
        });
    }
    if account.status != AccountStatus::Active {
        return Err(LedgerError::AccountNotActive { account: account.id, status: account.status });
    }
    Ok(())
}

/// Checks that `account` may be debited (or have a hold placed) for `amount_minor`: posted − held
/// − amount must stay at or above −overdraft limit. System accounts have no limit.
pub fn check_funds(account: &Account, amount_minor: i64) -> Result<(), LedgerError> {
    if account.is_system() {
        return Ok(());
    }
    let after = i128::from(account.posted_minor) - i128::from(account.held_minor) - i128::from(amount_minor);
    if after < -i128::from(account.overdraft_limit_minor) {
        return Err(LedgerError::InsufficientFunds { account: account.id });
    }
    Ok(())
}

fn add_posted(account: &mut Account, delta_minor: i64) -> Result<(), LedgerError> {
    account.posted_minor =
        account.posted_minor.checked_add(delta_minor).ok_or(LedgerError::BalanceOverflow { account: account.id })?;
    Ok(())
}

fn add_held(account: &mut Account, delta_minor: i64) -> Result<(), LedgerError> {
    let held =
        account.held_minor.checked_add(delta_minor).ok_or(LedgerError::BalanceOverflow { account: account.id })?;
    assert!(held >= 0, "holds never go negative: a release matches a hold");
    account.held_minor = held;
    Ok(())
}

/// Appends the next event of `account`, advancing its gap-free sequence and version.
fn push_event(account: &mut Account, body: EventBody, now: Timestamp, events: &mut Vec<Event>) -> u64 {
    account.last_event_seq += 1;
    account.version += 1;
    let seq = account.last_event_seq;
    events.push(Event { account_id: account.id, seq, version: EVENT_VERSION, at: now, body });
    seq
}

/// The account `id`, or, for a system account's fixed id, a fresh system account: the ledger
/// opens each system account the first time a transfer uses it.
fn account_or_system(view: &impl LedgerView, id: AccountId, now: Timestamp) -> Result<(Write, Account), LedgerError> {
    if let Some(a) = view.account(id) {
        return Ok((Write::Update, a.clone()));
    }
    let (system, currency) = SystemAccount::from_id(id).ok_or(LedgerError::AccountNotFound(id))?;
    Ok((Write::Insert, system_account(system, currency, now)))
}

/// The system account `system` in `currency` as the ledger opens it at `now`: active, empty,
/// without events. Stores open the rails' clearing accounts so when they start
/// (`external::rail::clearing_accounts`); the others are opened by their first transfer.
pub fn system_account(system: SystemAccount, currency: Currency, now: Timestamp) -> Account {
    Account {
        id: system.id(currency),
        number: system.number(currency),
        owner: AccountOwner::Bank { system },
        kind: AccountKind::System,
        currency,
        status: AccountStatus::Active,
        posted_minor: 0,
        held_minor: 0,
        overdraft_limit_minor: 0,
        last_event_seq: 0,
        version: 0,
        opened_at: now,
    }
}

fn existing_account(view: &impl LedgerView, id: AccountId) -> Result<Account, LedgerError> {
    view.account(id).cloned().ok_or(LedgerError::AccountNotFound(id))
}

// ---------------------------------------------------------------------------------------------
// Customers

fn open_customer(view: &impl LedgerView, req: &NewCustomer, now: Timestamp) -> Result<Decision, LedgerError> {
    if let Some(existing) = view.customer(req.id) {
        return if existing.opening_request_matches(req) {
            Ok(replay(Outcome::Customer(Box::new(existing.clone()))))
        } else {
            Err(LedgerError::IdempotencyConflict { id: req.id.to_string() })
        };
    }
    validate_new_customer(req)?;
    if view.customer_by_username(&req.username).is_some() {
        return Err(LedgerError::UsernameTaken);
    }
    let customer = Customer::opened(req, now);
    let effects = Effects { customers: vec![(Write::Insert, customer.clone())], ..Effects::default() };
    Ok(applied(Outcome::Customer(Box::new(customer)), effects))
}

fn update_customer(
    view: &impl LedgerView,
    id: CustomerId,
    expected_version: Option<u64>,
    update: &CustomerUpdate,
    now: Timestamp,
) -> Result<Decision, LedgerError> {
    let current = view.customer(id).ok_or(LedgerError::CustomerNotFound(id))?;
    if let Some(expected) = expected_version
        && expected != current.version
    {
        return Err(LedgerError::VersionConflict { expected, actual: current.version });
    }
    let mut c = current.clone();
    if let Some(contact) = &update.contact {
        check_contact(contact)?;
        c.contact = contact.clone();
    }
    if let Some(photo_ref) = &update.photo_ref {
        check_photo_ref(photo_ref.as_ref())?;
        c.photo_ref = photo_ref.clone();
    }
    if let Some(biometric) = &update.biometric {
        if let crate::customer::BiometricEnrolment::Enrolled { device_id, .. } = biometric {
            check_text("biometric.device_id", device_id, false)?;
        }
        c.biometric = biometric.clone();
    }
    if let Some(kyc) = update.kyc {
        c.kyc = kyc;
    }
    if let Some(documents) = &update.documents {
        check_documents(documents)?;
        c.documents = documents.clone();
    }
    if let Some(extra) = &update.extra {
        for (key, value) in extra {
            if value.is_null() {
                c.extra.remove(key);
            } else {
                c.extra.insert(key.clone(), value.clone());
            }
        }
        check_extra(&c.extra)?;
    }
    c.version += 1;
    c.updated_at = now;
    let effects = Effects { customers: vec![(Write::Update, c.clone())], ..Effects::default() };
    Ok(applied(Outcome::Customer(Box::new(c)), effects))
}

// ---------------------------------------------------------------------------------------------
// Accounts

fn account_matches(a: &Account, req: &NewAccount) -> bool {
    a.customer_id() == Some(req.customer_id)
        && a.kind == req.kind
        && a.currency == req.currency
        && a.overdraft_limit_minor == req.overdraft_limit_minor
}

fn open_account(view: &impl LedgerView, req: &NewAccount, now: Timestamp) -> Result<Decision, LedgerError> {
    if let Some(existing) = view.account(req.id) {
        return if account_matches(existing, req) {
            Ok(replay(Outcome::Account(existing.clone())))
        } else {
            Err(LedgerError::IdempotencyConflict { id: req.id.to_string() })
        };
    }
    if req.kind == AccountKind::System || SystemAccount::from_id(req.id).is_some() {
        return Err(LedgerError::InvalidField {
            field: "kind",
            reason: "system accounts are opened by the ledger itself",
        });
    }
    if req.overdraft_limit_minor < 0 {
        return Err(LedgerError::InvalidField { field: "overdraft_limit", reason: "must not be negative" });
    }
    if view.customer(req.customer_id).is_none() {
        return Err(LedgerError::CustomerNotFound(req.customer_id));
    }
    let serial = view.next_account_serial();
    let number = AccountNumber::from_serial(serial)
        .ok()
        .filter(|_| serial < SYSTEM_SERIAL_BASE)
        .ok_or(LedgerError::InvalidField { field: "number", reason: "no account numbers left" })?;
    let mut account = Account {
        id: req.id,
        number,
        owner: AccountOwner::Customer { customer_id: req.customer_id },
        kind: req.kind,
        currency: req.currency,
        status: AccountStatus::Active,
        posted_minor: 0,
        held_minor: 0,
        overdraft_limit_minor: req.overdraft_limit_minor,
        last_event_seq: 0,
        version: 0,
        opened_at: now,
    };
    let mut events = Vec::with_capacity(1);
    let balances = account.balances();
    push_event(&mut account, EventBody::AccountOpened { balances }, now, &mut events);
    let effects = Effects { accounts: vec![(Write::Insert, account.clone())], events, ..Effects::default() };
    Ok(applied(Outcome::Account(account), effects))
}

fn set_account_status(
    view: &impl LedgerView,
    id: AccountId,
    status: AccountStatus,
    now: Timestamp,
) -> Result<Decision, LedgerError> {
    let mut account = existing_account(view, id)?;
    if account.is_system() {
        return Err(LedgerError::InvalidField { field: "status", reason: "system accounts are always active" });
    }
    if account.status == status {
        return Ok(replay(Outcome::Account(account)));
    }
    if account.status == AccountStatus::Closed {
        return Err(LedgerError::InvalidField { field: "status", reason: "a closed account stays closed" });
    }
    if status == AccountStatus::Closed && (account.posted_minor != 0 || account.held_minor != 0) {
        return Err(LedgerError::AccountNotEmpty { account: id });
    }
    account.status = status;
    let mut events = Vec::with_capacity(1);
    push_event(&mut account, EventBody::AccountStatusChanged { status }, now, &mut events);
    let effects = Effects { accounts: vec![(Write::Update, account.clone())], events, ..Effects::default() };
    Ok(applied(Outcome::Account(account), effects))
}

// ---------------------------------------------------------------------------------------------
// Transfers

/// Idempotency of a transfer request: the stored transfer with the same id is replayed if the
/// request is the same, and a conflict otherwise.
pub fn transfer_idempotency(existing: &Transfer, req: &TransferRequest) -> Result<Decision, LedgerError> {
    if existing.was_requested_by(req) {
        Ok(replay(Outcome::Transfer(existing.clone())))
    } else {
        Err(LedgerError::IdempotencyConflict { id: req.id.to_string() })
    }
}

/// Moves `amount` from `debit` to `credit`, writing both postings and both events.
fn post_money(
    transfer: &Transfer,
    debit: &mut Account,
    credit: &mut Account,
    release_hold: bool,
    now: Timestamp,
    effects: &mut Effects,
) -> Result<(), LedgerError> {
    let amount = transfer.amount.amount_minor();
    if release_hold {
        add_held(debit, -amount)?;
    }
    add_posted(debit, -amount)?;
    add_posted(credit, amount)?;
    for (account, direction, counterparty) in
        [(debit, Direction::Debit, transfer.credit_account), (credit, Direction::Credit, transfer.debit_account)]
    {
        let body = EventBody::TransferPosted {
            transfer_id: transfer.id,
            kind: transfer.kind,
            direction,
            amount: transfer.amount,
            counterparty,
            balances: account.balances(),
        };
        let seq = push_event(account, body, now, &mut effects.events);
        effects.postings.push(Posting {
            seq,
            account_id: account.id,
            transfer_id: transfer.id,
            kind: transfer.kind,
            direction,
            amount: transfer.amount,
            balance_after: Money::new(account.posted_minor, account.currency),
            counterparty,
            reference: transfer.reference.clone(),
            posted_at: now,
        });
    }
    Ok(())
}

fn transfer(
    view: &impl LedgerView,
    req: &TransferRequest,
    now: Timestamp,
    spare: Effects,
) -> Result<Decision, LedgerError> {
    if let Some(existing) = view.transfer(req.id) {
        return transfer_idempotency(existing, req);
    }
    let movement = if req.hold_until.is_some() { Movement::Hold } else { Movement::Post };
    new_transfer(view, req, movement, now, spare)
}

/// Whether a new transfer moves the money at once or holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Movement {
    /// Posted at once.
    Post,
    /// Pending, holding the amount on the debit account until `hold_until` (none: until the
    /// external party answers).
    Hold,
}

/// A new transfer (its id not taken): validated, funds checked, held or posted.
fn new_transfer(
    view: &impl LedgerView,
    req: &TransferRequest,
    movement: Movement,
    now: Timestamp,
    spare: Effects,
) -> Result<Decision, LedgerError> {
    validate_transfer_request(req, now)?;
    let (debit_write, mut debit) = account_or_system(view, req.debit_account, now)?;
    let (credit_write, mut credit) = account_or_system(view, req.credit_account, now)?;
    check_account_usable(&debit, req.amount)?;
    check_account_usable(&credit, req.amount)?;
    check_kind(req.kind, &debit, &credit)?;
    let amount = req.amount.amount_minor();
    check_funds(&debit, amount)?;

    let mut transfer = Transfer {
        id: req.id,
        kind: req.kind,
        debit_account: req.debit_account,
        credit_account: req.credit_account,
        amount: req.amount,
        reference: req.reference.clone(),
        state: TransferState::Posted,
        hold_until: req.hold_until.map(truncate_to_micros),
        void_reason: None,
        created_at: now,
        finished_at: Some(now),
    };
    let mut effects = spare;
    effects.clear();
    let holds_only = movement == Movement::Hold;
    if holds_only {
        transfer.state = TransferState::Pending;
        transfer.finished_at = None;
        add_held(&mut debit, amount)?;
        let body = EventBody::TransferPending {
            transfer_id: transfer.id,
            kind: transfer.kind,
            amount: transfer.amount,
            counterparty: transfer.credit_account,
            balances: debit.balances(),
        };
        push_event(&mut debit, body, now, &mut effects.events);
    } else {
        post_money(&transfer, &mut debit, &mut credit, false, now, &mut effects)?;
    }
    // The debit always changes (a hold or a posting); the credit only when money moves, or when
    // it is a system account opened by this transfer.
    effects.accounts.push((debit_write, debit));
    if credit_write == Write::Insert || !holds_only {
        effects.accounts.push((credit_write, credit));
    }
    effects.transfers.push((Write::Insert, transfer.clone()));
    Ok(applied(Outcome::Transfer(transfer), effects))
}

fn pending_transfer(view: &impl LedgerView, id: TransferId) -> Result<&Transfer, LedgerError> {
    view.transfer(id).ok_or(LedgerError::TransferNotFound(id))
}

fn post_pending(view: &impl LedgerView, id: TransferId, now: Timestamp) -> Result<Decision, LedgerError> {
    let t = pending_transfer(view, id)?;
    if t.awaits_external_party() {
        return Err(LedgerError::HeldForExternalParty { transfer: id });
    }
    post_hold(view, t, Authority::Ledger, now)
}

/// Who ends a hold: the ledger's own commands, or an external payment's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Authority {
    /// `PostPending`, `VoidPending`: the accounts must be active to post.
    Ledger,
    /// `ApplyService`: the outside party has taken the order, so the money has left; posting
    /// it does not depend on the accounts' status (a frozen payer cannot undo a payment the
    /// rail accepted, as a void does not look at the status either).
    Lifecycle,
}

/// Posts the pending transfer `t` (a replay if it is posted already).
fn post_hold(view: &impl LedgerView, t: &Transfer, by: Authority, now: Timestamp) -> Result<Decision, LedgerError> {
    let id = t.id;
    match t.state {
        TransferState::Posted => return Ok(replay(Outcome::Transfer(t.clone()))),
        TransferState::Voided | TransferState::Failed => {
            return Err(LedgerError::InvalidTransition { transfer: id, from: t.state, to: TransferState::Posted });
        }
        TransferState::Pending => {}
    }
    if t.hold_until.is_some_and(|until| now > until) {
        return Err(LedgerError::HoldExpired { transfer: id });
    }
    let mut debit = existing_account(view, t.debit_account)?;
    let mut credit = existing_account(view, t.credit_account)?;
    if by == Authority::Ledger {
        check_account_usable(&debit, t.amount)?;
        check_account_usable(&credit, t.amount)?;
    }
    let mut transfer = t.clone();
    transfer.state = TransferState::Posted;
    transfer.finished_at = Some(now);
    let mut effects = Effects::default();
    post_money(&transfer, &mut debit, &mut credit, true, now, &mut effects)?;
    effects.accounts.push((Write::Update, debit));
    effects.accounts.push((Write::Update, credit));
    effects.transfers.push((Write::Update, transfer.clone()));
    Ok(applied(Outcome::Transfer(transfer), effects))
}

fn void_pending(
    view: &impl LedgerView,
    id: TransferId,
    reason: VoidReason,
    now: Timestamp,
) -> Result<Decision, LedgerError> {
    let t = pending_transfer(view, id)?;
    if t.awaits_external_party() {
        return Err(LedgerError::HeldForExternalParty { transfer: id });
    }
    release_hold(view, t, reason, now)
}

/// Voids (or fails) the pending transfer `t`, releasing its hold.
fn release_hold(
    view: &impl LedgerView,
    t: &Transfer,
    reason: VoidReason,
    now: Timestamp,
) -> Result<Decision, LedgerError> {
    let id = t.id;
    let target = if reason == VoidReason::Rejected { TransferState::Failed } else { TransferState::Voided };
    match t.state {
        s if s == target && t.void_reason == Some(reason) => return Ok(replay(Outcome::Transfer(t.clone()))),
        TransferState::Pending => {}
        from => return Err(LedgerError::InvalidTransition { transfer: id, from, to: target }),
    }
    if reason == VoidReason::Expired && t.hold_until.is_none_or(|until| now <= until) {
        return Err(LedgerError::HoldNotExpired { transfer: id });
    }
    let mut debit = existing_account(view, t.debit_account)?;
    let mut transfer = t.clone();
    transfer.state = target;
    transfer.void_reason = Some(reason);
    transfer.finished_at = Some(now);
    let mut effects = Effects::default();
    add_held(&mut debit, -transfer.amount.amount_minor())?;
    let body =
        EventBody::TransferVoided { transfer_id: id, reason, amount: transfer.amount, balances: debit.balances() };
    push_event(&mut debit, body, now, &mut effects.events);
    effects.accounts.push((Write::Update, debit));
    effects.transfers.push((Write::Update, transfer.clone()));
    Ok(applied(Outcome::Transfer(transfer), effects))
}

// ---------------------------------------------------------------------------------------------
// External services

/// The effects of a command decided in several steps, read back as the view each next step is
/// decided on: a step sees the accounts and transfers the earlier ones wrote.
struct Overlay<'a, V> {
    view: &'a V,
    effects: Effects,
}

impl<V: LedgerView> LedgerView for Overlay<'_, V> {
    fn account(&self, id: AccountId) -> Option<&Account> {
        let written = self.effects.accounts.iter().find(|(_, a)| a.id == id).map(|(_, a)| a);
        written.or_else(|| self.view.account(id))
    }
    fn transfer(&self, id: TransferId) -> Option<&Transfer> {
        let written = self.effects.transfers.iter().find(|(_, t)| t.id == id).map(|(_, t)| t);
        written.or_else(|| self.view.transfer(id))
    }
    fn customer(&self, id: CustomerId) -> Option<&Customer> {
        self.view.customer(id)
    }
    fn customer_by_username(&self, username: &Username) -> Option<CustomerId> {
        self.view.customer_by_username(username)
    }
    fn next_account_serial(&self) -> u64 {
        let opened =
            self.effects.accounts.iter().filter(|(w, a)| *w == Write::Insert && a.number.serial() < SYSTEM_SERIAL_BASE);
        opened.map(|(_, a)| a.number.serial() + 1).fold(self.view.next_account_serial(), u64::max)
    }
    fn service_record(&self, id: ServiceRecordId) -> Option<&ServiceRecord> {
        self.view.service_record(id)
    }
}

impl<'a, V: LedgerView> Overlay<'a, V> {
    fn new(view: &'a V) -> Self {
        Self { view, effects: Effects::default() }
    }

    /// Adds a step's effects: a record written twice keeps its first write's kind and its last
    /// state.
    fn absorb(&mut self, step: Effects) {
        fn merge<T>(into: &mut Vec<(Write, T)>, from: Vec<(Write, T)>, same: impl Fn(&T, &T) -> bool) {
            for (write, item) in from {
                match into.iter_mut().find(|(_, x)| same(x, &item)) {
                    Some(slot) => slot.1 = item,
                    None => into.push((write, item)),
                }
            }
        }
        merge(&mut self.effects.customers, step.customers, |a, b| a.id == b.id);
        merge(&mut self.effects.accounts, step.accounts, |a, b| a.id == b.id);
        merge(&mut self.effects.transfers, step.transfers, |a, b| a.id == b.id);
        merge(&mut self.effects.services, step.services, |a, b| a.id == b.id);
        self.effects.postings.extend(step.postings);
        self.effects.events.extend(step.events);
    }

    /// Appends `body` to `account_id`'s events, on the account as the earlier steps left it.
    fn emit(&mut self, account_id: AccountId, body: EventBody, now: Timestamp) -> Result<(), LedgerError> {
        let mut account = self.account(account_id).cloned().ok_or(LedgerError::AccountNotFound(account_id))?;
        let mut events = Vec::with_capacity(1);
        push_event(&mut account, body, now, &mut events);
        self.absorb(Effects { accounts: vec![(Write::Update, account)], events, ..Effects::default() });
        Ok(())
    }

    /// Opens loan `record`'s receivable account `id` (bank-owned, in the loan's currency), with
    /// the next account number.
    fn open_receivable(&mut self, record: &ServiceRecord, id: AccountId, now: Timestamp) -> Result<(), LedgerError> {
        if record.kind != ServiceKind::Loan || self.account(id).is_some() || SystemAccount::from_id(id).is_some() {
            return Err(LedgerError::InvalidField {
                field: "effects",
                reason: "a receivable account is opened once, for a loan, under a new id",
            });
        }
        let serial = self.next_account_serial();
        let number = AccountNumber::from_serial(serial)
            .ok()
            .filter(|_| serial < SYSTEM_SERIAL_BASE)
            .ok_or(LedgerError::InvalidField { field: "number", reason: "no account numbers left" })?;
        let mut account = system_account(SystemAccount::LoanReceivable, record.amount.currency(), now);
        account.id = id;
        account.number = number;
        let mut events = Vec::with_capacity(1);
        let balances = account.balances();
        push_event(&mut account, EventBody::AccountOpened { balances }, now, &mut events);
        self.absorb(Effects { accounts: vec![(Write::Insert, account)], events, ..Effects::default() });
        Ok(())
    }
}

const NOT_A_HOLD: LedgerError = LedgerError::InvalidField {
    field: "effects",
    reason: "a payment's request places its holds, without a deadline, the first from its account of its \
             amount; a loan's places none",
};

/// Whether `stored` was made by the same request as `new` (a retry of it). A payment's record
/// keeps its request's transfers and details; a loan's grows with its life (the decision, the
/// schedule, its transfers), so a retry is judged by the application alone.
fn same_service_request(stored: &ServiceRecord, new: &ServiceRecord) -> bool {
    let same_request = match new.kind {
        ServiceKind::Loan => crate::external::loan::same_application(stored, new),
        _ => stored.transfers == new.transfers && stored.details == new.details,
    };
    stored.customer_id == new.customer_id
        && stored.kind == new.kind
        && stored.account_id == new.account_id
        && stored.amount == new.amount
        && same_request
}

/// Whether `hold` may be one of a service request's holds: without a deadline, joining a
/// system account, and taken from the customer's account or from one of the bank's.
fn is_service_hold(record: &ServiceRecord, hold: &TransferRequest) -> bool {
    let debit_is_system = SystemAccount::from_id(hold.debit_account).is_some();
    let credit_is_system = SystemAccount::from_id(hold.credit_account).is_some();
    hold.hold_until.is_none()
        && (debit_is_system || credit_is_system)
        && (hold.debit_account == record.account_id || debit_is_system)
}

fn request_service(view: &impl LedgerView, t: &Transition, now: Timestamp) -> Result<Decision, LedgerError> {
    let record = &t.record;
    if let Some(stored) = view.service_record(record.id) {
        return if same_service_request(stored, record) {
            Ok(replay(Outcome::Service(Box::new(stored.clone()))))
        } else {
            Err(LedgerError::IdempotencyConflict { id: record.id.to_string() })
        };
    }
    let holds: Vec<&TransferRequest> =
        t.effects.iter().filter_map(|e| if let Effect::PlaceHold(h) = e { Some(h) } else { None }).collect();
    let ids: Vec<TransferId> = holds.iter().map(|h| h.id).collect();
    // A payment holds its money from the start; a loan application moves none until it is
    // accepted.
    let holds_ok = match (record.kind, holds.first()) {
        (ServiceKind::Loan, None) => true,
        (ServiceKind::Loan, Some(_)) | (_, None) => false,
        (_, Some(first)) => {
            first.debit_account == record.account_id
                && first.amount == record.amount
                && holds.iter().all(|h| is_service_hold(record, h))
        }
    };
    if record.status != ServiceStatus::Requested
        || record.transfers != ids
        || !holds_ok
        || t.effects.iter().any(|e| !matches!(e, Effect::PlaceHold(_) | Effect::Emit(_)))
    {
        return Err(NOT_A_HOLD);
    }
    let payer = existing_account(view, record.account_id)?;
    if payer.customer_id() != Some(record.customer_id) {
        return Err(LedgerError::InvalidField { field: "account_id", reason: "is not the customer's account" });
    }
    let mut overlay = Overlay::new(view);
    for hold in holds {
        let step = match overlay.transfer(hold.id) {
            None => new_transfer(&overlay, hold, Movement::Hold, now, Effects::default())?.effects,
            Some(existing) => adopt_hold(existing, hold, now)?,
        };
        overlay.absorb(step);
    }
    for effect in &t.effects {
        if let Effect::Emit(body) = effect {
            overlay.emit(record.account_id, body.clone(), now)?;
        }
    }
    let mut record = record.clone();
    record.version = 1;
    let mut effects = overlay.effects;
    effects.services.push((Write::Insert, record.clone()));
    Ok(applied(Outcome::Service(Box::new(record)), effects))
}

/// A pending transfer placed under the hold's id while the payment waited for SCA becomes the
/// hold: the same accounts, amount and reference, not expired; its deadline is removed.
fn adopt_hold(existing: &Transfer, hold: &TransferRequest, now: Timestamp) -> Result<Effects, LedgerError> {
    let same = existing.kind == hold.kind
        && existing.debit_account == hold.debit_account
        && existing.credit_account == hold.credit_account
        && existing.amount == hold.amount
        && existing.reference == hold.reference;
    if !same || existing.state != TransferState::Pending || existing.hold_until.is_none() {
        return Err(LedgerError::IdempotencyConflict { id: hold.id.to_string() });
    }
    if existing.hold_until.is_some_and(|until| now > until) {
        return Err(LedgerError::HoldExpired { transfer: hold.id });
    }
    let mut adopted = existing.clone();
    adopted.hold_until = None;
    Ok(Effects { transfers: vec![(Write::Update, adopted)], ..Effects::default() })
}

/// Whether `new` keeps what a transition never changes in `stored`: its transfers may only grow,
/// by the ones the transition posts.
fn same_service(stored: &ServiceRecord, new: &ServiceRecord) -> bool {
    stored.id == new.id
        && stored.customer_id == new.customer_id
        && stored.kind == new.kind
        && stored.account_id == new.account_id
        && stored.amount == new.amount
        && new.transfers.starts_with(&stored.transfers)
        && stored.created_at == new.created_at
}

fn invalid_effects(reason: &'static str) -> LedgerError {
    LedgerError::InvalidField { field: "effects", reason }
}

fn apply_service(
    view: &impl LedgerView,
    id: ServiceRecordId,
    expected_version: u64,
    t: &Transition,
    now: Timestamp,
) -> Result<Decision, LedgerError> {
    let stored = view.service_record(id).ok_or(LedgerError::ServiceNotFound(id))?;
    if stored.version != expected_version {
        return Err(LedgerError::VersionConflict { expected: expected_version, actual: stored.version });
    }
    if !same_service(stored, &t.record) {
        return Err(LedgerError::InvalidField {
            field: "record",
            reason: "a transition changes only a record's status, schedule, reason and details, and adds transfers",
        });
    }
    let posted: Vec<TransferId> =
        t.effects.iter().filter_map(|e| if let Effect::Post(p) = e { Some(p.id) } else { None }).collect();
    if t.record.transfers[stored.transfers.len()..] != posted[..] {
        return Err(invalid_effects("the record's new transfers are exactly the ones the transition posts"));
    }
    let mut overlay = Overlay::new(view);
    for effect in &t.effects {
        let step = match effect {
            Effect::PostHold(h) | Effect::VoidHold(h) if !stored.transfers.contains(h) => {
                return Err(invalid_effects("names a transfer that is not the record's"));
            }
            Effect::PostHold(h) => {
                let held = pending_transfer(&overlay, *h)?;
                post_hold(&overlay, held, Authority::Lifecycle, now)?
            }
            Effect::VoidHold(h) => release_hold(&overlay, pending_transfer(&overlay, *h)?, VoidReason::Rejected, now)?,
            Effect::Post(request) => {
                if request.hold_until.is_some() || overlay.transfer(request.id).is_some() {
                    return Err(invalid_effects("a transition posts new transfers at once"));
                }
                let customers_account = |id: AccountId| overlay.account(id).is_some_and(|a| !a.is_system());
                if [request.debit_account, request.credit_account]
                    .into_iter()
                    .any(|a| a != t.record.account_id && customers_account(a))
                {
                    return Err(invalid_effects("a transition moves money only on the record's own account"));
                }
                new_transfer(&overlay, request, Movement::Post, now, Effects::default())?
            }
            Effect::OpenReceivable(account) => {
                overlay.open_receivable(&t.record, *account, now)?;
                continue;
            }
            Effect::PlaceHold(_) => return Err(invalid_effects("holds are placed once, by the request")),
            Effect::Emit(body) => {
                overlay.emit(t.record.account_id, body.clone(), now)?;
                continue;
            }
            // The caller's to do once the write is durable.
            Effect::Submit(_) | Effect::QueryStatus(_) | Effect::Decide(_) | Effect::QueryDecision(_) => continue,
        };
        if step.executed.replayed {
            return Err(invalid_effects("a transition moves each transfer once"));
        }
        overlay.absorb(step.effects);
    }
    let mut record = t.record.clone();
    record.version = expected_version + 1;
    let mut effects = overlay.effects;
    effects.services.push((Write::Update, record.clone()));
    Ok(applied(Outcome::Service(Box::new(record)), effects))
}

#[cfg(test)]
mod tests {
    use super::validate_transfer_request;
    use crate::error::LedgerError;
    use crate::ids::{AccountId, TransferId};
    use crate::money::{Currency, Money};
    use crate::transfer::{TransferKind, TransferRequest};

    fn request(hold_until: Option<crate::Timestamp>) -> TransferRequest {
        TransferRequest {
            id: TransferId::new_v7(),
            kind: TransferKind::Internal,
            debit_account: AccountId::new_v7(),
            credit_account: AccountId::new_v7(),
            amount: Money::new(100, Currency::EUR),
            reference: None,
            hold_until,
        }
    }

    #[test]
    fn hold_until_is_judged_at_the_precision_it_is_recorded_with() {
        let now = chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000).expect("valid time");
        let within_the_same_microsecond = now + chrono::TimeDelta::nanoseconds(500);
        let next_microsecond = now + chrono::TimeDelta::microseconds(1);
        assert_eq!(
            validate_transfer_request(&request(Some(within_the_same_microsecond)), now),
            Err(LedgerError::InvalidField { field: "hold_until", reason: "must be in the future" })
        );
        assert_eq!(validate_transfer_request(&request(Some(next_microsecond)), now), Ok(()));
    }

    /// Filling a used `Effects` decides exactly as filling new lists: whatever the spare held
    /// (here every list non-empty) is gone, and every other command ignores it.
    #[test]
    fn deciding_into_used_effects_is_deciding_afresh() {
        use super::{Effects, decide, decide_reusing};
        use crate::account::SystemAccount;
        use crate::command::Command;
        use crate::customer::{KycStatus, NewCustomer, Username};
        use crate::ids::CustomerId;
        use crate::service::current_account;
        use crate::state::LedgerState;

        let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("a valid time");
        let customer = CustomerId::new_v7();
        let username = Username::parse("ada").expect("a valid username");
        let (a, b) = (AccountId::new_v7(), AccountId::new_v7());
        let pay = |debit, credit, amount_minor, hold: bool| {
            Command::Transfer(TransferRequest {
                amount: Money::new(amount_minor, Currency::EUR),
                debit_account: debit,
                credit_account: credit,
                kind: if debit == SystemAccount::Funding.id(Currency::EUR) {
                    TransferKind::Deposit
                } else {
                    TransferKind::Internal
                },
                hold_until: hold.then(|| now + chrono::TimeDelta::hours(1)),
                ..request(None)
            })
        };
        let mut state = LedgerState::new();
        let mut spare = Effects::default();
        for cmd in [
            Command::OpenCustomer(Box::new(NewCustomer::person(customer, username, "Ada", "L", KycStatus::Verified))),
            Command::OpenAccount(crate::service::current_account(a, customer, Currency::EUR)),
            Command::OpenAccount(current_account(b, customer, Currency::EUR)),
            pay(SystemAccount::Funding.id(Currency::EUR), a, 10_000, false),
        ] {
            let effects = decide(&state, &cmd, now).expect("the set-up is accepted").effects;
            state.apply(&effects);
            spare.customers.extend(effects.customers);
            spare.accounts.extend(effects.accounts);
            spare.transfers.extend(effects.transfers);
            spare.postings.extend(effects.postings);
            spare.events.extend(effects.events);
        }
        assert!(![spare.customers.len(), spare.accounts.len(), spare.transfers.len(), spare.events.len()].contains(&0));
        let hold = pay(a, b, 1_000, true);
        for (what, cmd) in [
            ("a payment", pay(a, b, 3_000, false)),
            ("a hold", hold.clone()),
            ("an overdraft", pay(a, b, 1_000_000, false)),
            ("an account", Command::OpenAccount(current_account(AccountId::new_v7(), customer, Currency::EUR))),
        ] {
            let fresh = decide(&state, &cmd, now);
            assert_eq!(decide_reusing(&state, &cmd, now, spare.clone()), fresh, "{what}");
        }
        let held = decide(&state, &hold, now).expect("a hold").effects;
        state.apply(&held);
        assert_eq!(decide_reusing(&state, &hold, now, spare.clone()), decide(&state, &hold, now), "a replay");
        assert!(decide(&state, &hold, now).is_ok_and(|d| d.effects.is_empty()), "a replay writes nothing");
    }
}
