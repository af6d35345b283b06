//! The invariants of the ledger, written once: [`check`] verifies them on [`Books`], a
//! description of what is known of a ledger, and names the first one broken as a [`Violation`].
//!
//! Everyone who can see a ledger checks it here: the SQLite store when it opens a database (its
//! totals; a violation is [`StoreErrorKind::Corrupt`](crate::StoreErrorKind::Corrupt)), both
//! stores after every command in debug builds ([`Books::of_effects`]), the conformance suites after
//! every case, the crash test after every restart, and the property tests of the rules after
//! every step. What each of them knows differs, so every part of [`Books`] but the accounts is
//! optional and [`check`] verifies whatever parts are given; [`Invariant`] says what each
//! invariant needs, and which need the complete set of accounts ([`Scope::Ledger`]).
//!
//! Violations name invariants, ids, currencies and sequence numbers, never balances or amounts,
//! so that they can be logged.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::account::{Account, AccountKind};
use crate::event::{EVENT_VERSION, Event, EventBody};
use crate::ids::{AccountId, TransferId};
use crate::money::Currency;
use crate::rules::{Effects, LedgerView};
use crate::store::{CurrencyTotal, OutboxEntry};
use crate::transfer::{Direction, Posting, Transfer, TransferState};

/// How much of the ledger [`Books`] describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every account of the ledger, and (where given) every transfer: the invariants that sum
    /// over the whole ledger are checked.
    Ledger,
    /// Some accounts (and, where given, some transfers): only what holds of each part is checked.
    Part,
}

/// What is known of a ledger, for [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Books {
    /// Whether the accounts (and transfers) are all of the ledger's.
    pub scope: Scope,
    /// The accounts, each with its events and postings where they are known.
    pub accounts: Vec<AccountBooks>,
    /// Transfers, where known: with [`Scope::Ledger`] every transfer of the ledger, otherwise at
    /// least every transfer that a given posting belongs to.
    pub transfers: Option<Vec<Transfer>>,
    /// The outbox (or its beginning), in position order, where known.
    pub outbox: Option<Vec<OutboxEntry>>,
    /// The store's totals per currency, where known.
    pub totals: Option<Vec<CurrencyTotal>>,
}

/// An account and, where known, its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountBooks {
    /// The account as it is now.
    pub account: Account,
    /// Its events and postings (all of them, or the latest ones), where known.
    pub history: Option<History>,
}

/// The events and postings of an account after a point of its history: all of them when that
/// point is its opening (`after_seq` 0, `posted_before_minor` 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The number of the account's event before the first of `events` (0: none before).
    pub after_seq: u64,
    /// The account's posted balance after event `after_seq`, in minor units.
    pub posted_before_minor: i64,
    /// The events after `after_seq`, oldest first.
    pub events: Vec<Event>,
    /// The postings after `after_seq`, oldest first.
    pub postings: Vec<Posting>,
}

impl History {
    /// An account's whole history: every event and every posting, oldest first.
    pub fn whole(events: Vec<Event>, postings: Vec<Posting>) -> Self {
        Self { after_seq: 0, posted_before_minor: 0, events, postings }
    }
}

impl Books {
    /// Books of `scope` with no account and nothing else known yet.
    pub fn new(scope: Scope) -> Self {
        Self { scope, accounts: Vec::new(), transfers: None, outbox: None, totals: None }
    }

    /// The books of one decided command, for a store to check before it applies the effects to
    /// `view` (its state before the command): every account the command writes, with the events
    /// and postings it adds since `view`'s state of it, and the transfers it writes.
    pub fn of_effects(view: &impl LedgerView, effects: &Effects) -> Self {
        let accounts = effects
            .accounts
            .iter()
            .map(|(_, account)| {
                let before = view.account(account.id);
                let history = History {
                    after_seq: before.map_or(0, |a| a.last_event_seq),
                    posted_before_minor: before.map_or(0, |a| a.posted_minor),
                    events: effects.events.iter().filter(|e| e.account_id == account.id).cloned().collect(),
                    postings: effects.postings.iter().filter(|p| p.account_id == account.id).cloned().collect(),
                };
                AccountBooks { account: account.clone(), history: Some(history) }
            })
            .collect();
        let transfers = effects.transfers.iter().map(|(_, t)| t.clone()).collect();
        Self { accounts, transfers: Some(transfers), ..Self::new(Scope::Part) }
    }
}

/// The invariants of the ledger. Each says what [`check`] needs to verify it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invariant {
    /// An account's holds are never negative. Needs the account.
    HoldsNonNegative,
    /// An account's overdraft limit is never negative. Needs the account.
    OverdraftLimitNonNegative,
    /// A customer account's `posted − held` stays at or above minus its overdraft limit (system
    /// accounts have no limit). Needs the account.
    WithinOverdraft,
    /// An account is of kind `System` exactly when the bank owns it. Needs the account.
    SystemAccountOwner,
    /// An account's version is its latest event's number: every change of it is an event. Needs
    /// the account.
    VersionCountsEvents,
    /// An account's events are numbered one after another up to `last_event_seq`, without gaps,
    /// are its own, have ids derived from account and number, and are of the current format.
    /// Needs its history.
    EventSequence,
    /// An account's postings are its own, in its currency, of positive amounts, in sequence
    /// order. Needs its history.
    PostingsInOrder,
    /// Each posting's `balance_after` is the running sum of the postings, and the account's
    /// balance is where they end. Needs its history.
    RunningBalance,
    /// Each posting agrees with the `transfer.posted` event of its number, and each such event
    /// has its posting. Needs its history.
    PostingMatchesEvent,
    /// A posted transfer has exactly its two lines, a debit on its debit account and a credit on
    /// its credit account, each as the transfer says; any other transfer has none. Needs the
    /// transfers and the histories of both accounts of each.
    TransferLines,
    /// Every posting belongs to a given transfer, which is posted. Needs the transfers and the
    /// histories.
    PostingOfTransfer,
    /// An account's holds are the sum of the pending transfers it pays. Needs every transfer:
    /// [`Scope::Ledger`].
    HoldsArePending,
    /// The outbox holds each event once, at increasing positions. Needs the outbox.
    OutboxOnce,
    /// The outbox holds each account's events, in sequence order, and, over the whole ledger,
    /// no event of an account that does not exist. Needs the outbox and the whole histories.
    OutboxHoldsEvents,
    /// Every currency's balances sum to zero: checked on the totals alone, and on the accounts
    /// with [`Scope::Ledger`].
    CurrencySumsToZero,
    /// The totals list each currency once, and, over the whole ledger, every currency of the
    /// accounts with the sum and the number of its accounts. Needs the totals.
    TotalsMatchAccounts,
}

impl Invariant {
    /// What the invariant says, in a sentence without its ids.
    pub fn description(self) -> &'static str {
        match self {
            Invariant::HoldsNonNegative => "holds are never negative",
            Invariant::OverdraftLimitNonNegative => "overdraft limits are never negative",
            Invariant::WithinOverdraft => "a customer account stays within its overdraft limit",
            Invariant::SystemAccountOwner => "an account is of kind System exactly when the bank owns it",
            Invariant::VersionCountsEvents => "an account's version is its latest event's number",
            Invariant::EventSequence => "an account's events are its own, numbered 1, 2, 3, … without gaps",
            Invariant::PostingsInOrder => "an account's postings are its own, positive, in its currency and in order",
            Invariant::RunningBalance => "the balance is the sum of the postings, each balance_after the running sum",
            Invariant::PostingMatchesEvent => "each posting is the transfer.posted event of its number",
            Invariant::TransferLines => "a posted transfer has exactly its debit and credit lines, others none",
            Invariant::PostingOfTransfer => "every posting belongs to a posted transfer",
            Invariant::HoldsArePending => "an account's holds are the sum of the pending transfers it pays",
            Invariant::OutboxOnce => "the outbox holds each event once, at increasing positions",
            Invariant::OutboxHoldsEvents => "the outbox holds every account's events once each, in sequence order",
            Invariant::CurrencySumsToZero => "every currency's balances sum to zero",
            Invariant::TotalsMatchAccounts => "the totals list each currency once, as its accounts sum",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// A broken invariant, and where: the ids, currency and event number that locate it (never a
/// balance or an amount).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// The account, if one is concerned.
    pub account: Option<AccountId>,
    /// The transfer, if one is concerned.
    pub transfer: Option<TransferId>,
    /// The currency, if one is concerned.
    pub currency: Option<Currency>,
    /// The event or posting number, if one is concerned.
    pub seq: Option<u64>,
}

impl Violation {
    fn new(invariant: Invariant) -> Self {
        Self { invariant, account: None, transfer: None, currency: None, seq: None }
    }

    fn account(invariant: Invariant, account: AccountId) -> Self {
        Self { account: Some(account), ..Self::new(invariant) }
    }

    fn at(invariant: Invariant, account: AccountId, seq: u64) -> Self {
        Self { seq: Some(seq), ..Self::account(invariant, account) }
    }

    fn transfer(invariant: Invariant, transfer: TransferId) -> Self {
        Self { transfer: Some(transfer), ..Self::new(invariant) }
    }

    fn currency(invariant: Invariant, currency: Currency) -> Self {
        Self { currency: Some(currency), ..Self::new(invariant) }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broken invariant: {}", self.invariant)?;
        if let Some(a) = self.account {
            write!(f, "; account {a}")?;
        }
        if let Some(s) = self.seq {
            write!(f, ", event {s}")?;
        }
        if let Some(t) = self.transfer {
            write!(f, "; transfer {t}")?;
        }
        if let Some(c) = self.currency {
            write!(f, "; currency {c}")?;
        }
        Ok(())
    }
}

/// Fails with `v` unless `holds`.
fn ensure(holds: bool, v: impl FnOnce() -> Violation) -> Result<(), Violation> {
    if holds { Ok(()) } else { Err(v()) }
}

/// Checks every invariant that `books` hold the data for; the first one broken is the error.
pub fn check(books: &Books) -> Result<(), Violation> {
    for a in &books.accounts {
        check_account(&a.account)?;
        if let Some(h) = &a.history {
            check_events(&a.account, h)?;
            check_postings(&a.account, h)?;
        }
    }
    if let Some(transfers) = &books.transfers {
        check_transfers(books, transfers)?;
    }
    if let Some(outbox) = &books.outbox {
        check_outbox(books, outbox)?;
    }
    if let Some(totals) = &books.totals {
        check_totals(books, totals)?;
    }
    if books.scope == Scope::Ledger {
        check_sums(books)?;
    }
    Ok(())
}

/// The invariants of an account's own fields.
fn check_account(a: &Account) -> Result<(), Violation> {
    let v = |invariant| move || Violation::account(invariant, a.id);
    ensure(a.held_minor >= 0, v(Invariant::HoldsNonNegative))?;
    ensure(a.overdraft_limit_minor >= 0, v(Invariant::OverdraftLimitNonNegative))?;
    ensure((a.kind == AccountKind::System) == a.is_system(), v(Invariant::SystemAccountOwner))?;
    let available = i128::from(a.posted_minor) - i128::from(a.held_minor);
    ensure(a.is_system() || available >= -i128::from(a.overdraft_limit_minor), v(Invariant::WithinOverdraft))?;
    ensure(a.version == a.last_event_seq, v(Invariant::VersionCountsEvents))
}

/// An account's events: `after_seq + 1 ..= last_event_seq`, its own, this format (an event's id
/// is derived from its account and seq, so it cannot disagree with them).
fn check_events(a: &Account, h: &History) -> Result<(), Violation> {
    let count = u64::try_from(h.events.len()).unwrap_or(u64::MAX);
    let last = h.after_seq.checked_add(count);
    ensure(last == Some(a.last_event_seq), || Violation::account(Invariant::EventSequence, a.id))?;
    for (seq, e) in (h.after_seq + 1..).zip(&h.events) {
        let own = e.seq == seq && e.account_id == a.id;
        ensure(own && e.version == EVENT_VERSION, || Violation::at(Invariant::EventSequence, a.id, seq))?;
    }
    Ok(())
}

/// An account's postings: its own, in order, the running balance, each with its event.
fn check_postings(a: &Account, h: &History) -> Result<(), Violation> {
    let mut running = i128::from(h.posted_before_minor);
    let mut last_seq = h.after_seq;
    for p in &h.postings {
        let at = |invariant| move || Violation::at(invariant, a.id, p.seq);
        let own = p.account_id == a.id && p.seq > last_seq && p.amount.currency() == a.currency;
        ensure(own && p.amount.is_positive(), at(Invariant::PostingsInOrder))?;
        last_seq = p.seq;
        running += i128::from(p.signed_minor());
        let after = i128::from(p.balance_after.amount_minor());
        ensure(after == running && p.balance_after.currency() == a.currency, at(Invariant::RunningBalance))?;
        let event = usize::try_from(p.seq - h.after_seq - 1).ok().and_then(|i| h.events.get(i));
        ensure(event.is_some_and(|e| posting_matches(p, e)), at(Invariant::PostingMatchesEvent))?;
    }
    ensure(running == i128::from(a.posted_minor), || Violation::account(Invariant::RunningBalance, a.id))?;
    let posted_events = h.events.iter().filter(|e| matches!(e.body, EventBody::TransferPosted { .. })).count();
    ensure(posted_events == h.postings.len(), || Violation::account(Invariant::PostingMatchesEvent, a.id))
}

/// Whether `p` is what the `transfer.posted` event `e` says.
fn posting_matches(p: &Posting, e: &Event) -> bool {
    match &e.body {
        EventBody::TransferPosted { transfer_id, kind, direction, amount, counterparty, balances } => {
            (*transfer_id, *kind, *direction, *amount, *counterparty)
                == (p.transfer_id, p.kind, p.direction, p.amount, p.counterparty)
                && balances.posted == p.balance_after
                && e.at == p.posted_at
        }
        _ => false,
    }
}

/// Transfers against the postings of the accounts whose histories are given, and the holds.
fn check_transfers(books: &Books, transfers: &[Transfer]) -> Result<(), Violation> {
    let with_history: HashSet<AccountId> =
        books.accounts.iter().filter(|a| a.history.is_some()).map(|a| a.account.id).collect();
    let mut lines: HashMap<TransferId, Vec<&Posting>> = HashMap::new();
    for p in books.accounts.iter().filter_map(|a| a.history.as_ref()).flat_map(|h| &h.postings) {
        lines.entry(p.transfer_id).or_default().push(p);
    }
    let by_id: HashMap<TransferId, &Transfer> = transfers.iter().map(|t| (t.id, t)).collect();
    for (id, ps) in &lines {
        let posted = by_id.get(id).is_some_and(|t| t.state == TransferState::Posted);
        ensure(posted, || Violation {
            seq: ps.first().map(|p| p.seq),
            ..Violation::transfer(Invariant::PostingOfTransfer, *id)
        })?;
    }
    for t in transfers {
        if with_history.contains(&t.debit_account) && with_history.contains(&t.credit_account) {
            let mine = lines.get(&t.id).map(Vec::as_slice).unwrap_or_default();
            ensure(transfer_lines_hold(t, mine), || Violation::transfer(Invariant::TransferLines, t.id))?;
        }
    }
    if books.scope == Scope::Ledger {
        let mut held: HashMap<AccountId, i128> = HashMap::new();
        for t in transfers.iter().filter(|t| t.state == TransferState::Pending) {
            *held.entry(t.debit_account).or_default() += i128::from(t.amount.amount_minor());
        }
        for a in books.accounts.iter().map(|a| &a.account) {
            let pending = held.get(&a.id).copied().unwrap_or(0);
            ensure(pending == i128::from(a.held_minor), || Violation::account(Invariant::HoldsArePending, a.id))?;
        }
    }
    Ok(())
}

/// Whether `lines` are exactly the lines `t` must have.
fn transfer_lines_hold(t: &Transfer, lines: &[&Posting]) -> bool {
    if t.state != TransferState::Posted {
        return lines.is_empty();
    }
    let line = |direction: Direction, account: AccountId, counterparty: AccountId| {
        lines.iter().any(|p| {
            p.direction == direction
                && p.account_id == account
                && p.counterparty == counterparty
                && p.amount == t.amount
                && p.kind == t.kind
                && p.reference == t.reference
                && Some(p.posted_at) == t.finished_at
        })
    };
    lines.len() == 2
        && line(Direction::Debit, t.debit_account, t.credit_account)
        && line(Direction::Credit, t.credit_account, t.debit_account)
}

/// The outbox: each event once at increasing positions; each account's events in it, in order.
fn check_outbox(books: &Books, outbox: &[OutboxEntry]) -> Result<(), Violation> {
    let mut ids = HashSet::new();
    let mut last_position = 0;
    let mut by_account: HashMap<AccountId, Vec<&Event>> = HashMap::new();
    for entry in outbox {
        let e = &entry.event;
        let once = entry.position > last_position && ids.insert((e.account_id, e.seq));
        ensure(once, || Violation::at(Invariant::OutboxOnce, e.account_id, e.seq))?;
        last_position = entry.position;
        by_account.entry(e.account_id).or_default().push(e);
    }
    for a in &books.accounts {
        let Some(h) = a.history.as_ref().filter(|h| h.after_seq == 0) else { continue };
        let listed = by_account.remove(&a.account.id).unwrap_or_default();
        let same = listed.len() == h.events.len() && listed.iter().zip(&h.events).all(|(x, y)| *x == y);
        ensure(same, || Violation::account(Invariant::OutboxHoldsEvents, a.account.id))?;
    }
    if books.scope == Scope::Ledger {
        let known: HashSet<AccountId> = books.accounts.iter().map(|a| a.account.id).collect();
        if let Some(e) = by_account.values().flatten().find(|e| !known.contains(&e.account_id)) {
            return Err(Violation::at(Invariant::OutboxHoldsEvents, e.account_id, e.seq));
        }
    }
    Ok(())
}

/// The totals: zero, once per currency, and over the whole ledger as the accounts sum.
fn check_totals(books: &Books, totals: &[CurrencyTotal]) -> Result<(), Violation> {
    let mut seen = HashSet::new();
    for t in totals {
        ensure(seen.insert(t.currency), || Violation::currency(Invariant::TotalsMatchAccounts, t.currency))?;
        ensure(t.posted_minor == 0, || Violation::currency(Invariant::CurrencySumsToZero, t.currency))?;
    }
    if books.scope == Scope::Ledger {
        let sums = CurrencyTotal::sum_of(books.accounts.iter().map(|a| &a.account));
        ensure(sums.len() == totals.len(), || Violation::new(Invariant::TotalsMatchAccounts))?;
        for t in totals {
            let same = sums.iter().any(|s| s == t);
            ensure(same, || Violation::currency(Invariant::TotalsMatchAccounts, t.currency))?;
        }
    }
    Ok(())
}

/// Every currency of the accounts sums to zero.
fn check_sums(books: &Books) -> Result<(), Violation> {
    for sum in CurrencyTotal::sum_of(books.accounts.iter().map(|a| &a.account)) {
        ensure(sum.posted_minor == 0, || Violation::currency(Invariant::CurrencySumsToZero, sum.currency))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! One test per invariant: a valid ledger passes, and the same ledger broken in one place
    //! fails with exactly that invariant.

    use super::{AccountBooks, Books, History, Invariant, Scope, Violation, check};
    use crate::Timestamp;
    use crate::account::{AccountKind, SystemAccount};
    use crate::command::Command;
    use crate::customer::{KycStatus, NewCustomer, Username};
    use crate::event::Event;
    use crate::ids::{AccountId, CustomerId, TransferId};
    use crate::money::{Currency, Money};
    use crate::rules::decide;
    use crate::service::current_account;
    use crate::state::LedgerState;
    use crate::store::{CurrencyTotal, OutboxEntry};
    use crate::transfer::{Posting, TransferKind, TransferRequest};

    const EUR: Currency = Currency::EUR;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("a valid time")
    }

    fn transfer(debit: AccountId, credit: AccountId, amount_minor: i64, hold: bool) -> Command {
        Command::Transfer(TransferRequest {
            id: TransferId::new_v7(),
            kind: if SystemAccount::from_id(debit).is_some() { TransferKind::Deposit } else { TransferKind::Internal },
            debit_account: debit,
            credit_account: credit,
            amount: Money::new(amount_minor, EUR),
            reference: None,
            hold_until: hold.then(|| now() + chrono::TimeDelta::hours(1)),
        })
    }

    /// A small ledger run through the rules: two accounts, a deposit, a payment and a hold; its
    /// complete books, and the id of the first account.
    fn valid() -> (Books, AccountId) {
        let mut state = LedgerState::new();
        let customer = CustomerId::new_v7();
        let username = Username::parse("ada").expect("a valid username");
        let (a, b) = (AccountId::new_v7(), AccountId::new_v7());
        let commands = [
            Command::OpenCustomer(Box::new(NewCustomer::person(customer, username, "Ada", "L", KycStatus::Verified))),
            Command::OpenAccount(current_account(a, customer, EUR)),
            Command::OpenAccount(current_account(b, customer, EUR)),
            transfer(SystemAccount::Funding.id(EUR), a, 10_000, false),
            transfer(a, b, 3_000, false),
            transfer(a, b, 1_000, true),
        ];
        let mut events: Vec<Event> = Vec::new();
        let mut postings: Vec<Posting> = Vec::new();
        for cmd in &commands {
            let decision = decide(&state, cmd, now()).expect("the rules accept the command");
            assert_eq!(check(&Books::of_effects(&state, &decision.effects)), Ok(()), "the effects of {cmd:?}");
            state.apply(&decision.effects);
            events.extend(decision.effects.events);
            postings.extend(decision.effects.postings);
        }
        let mut books = Books::new(Scope::Ledger);
        for account in state.accounts() {
            let mine = |e: &Event| e.account_id == account.id;
            let history = History::whole(
                events.iter().filter(|e| mine(e)).cloned().collect(),
                postings.iter().filter(|p| p.account_id == account.id).cloned().collect(),
            );
            books.accounts.push(AccountBooks { account: account.clone(), history: Some(history) });
        }
        books.transfers = Some(state.transfers().cloned().collect());
        books.outbox = Some((1..).zip(events).map(|(position, event)| OutboxEntry { position, event }).collect());
        books.totals = Some(CurrencyTotal::sum_of(state.accounts()));
        assert_eq!(check(&books), Ok(()), "the valid ledger passes");
        (books, a)
    }

    /// The books of account `id`.
    fn account(books: &mut Books, id: AccountId) -> &mut AccountBooks {
        books.accounts.iter_mut().find(|a| a.account.id == id).expect("the account is in the books")
    }

    fn history(books: &mut Books, id: AccountId) -> &mut History {
        account(books, id).history.as_mut().expect("a history")
    }

    /// Asserts that `books` break `invariant` first.
    fn broken(books: &Books, invariant: Invariant) {
        match check(books) {
            Err(Violation { invariant: found, .. }) if found == invariant => {}
            other => panic!("expected {invariant:?} to be broken, got {other:?}"),
        }
    }

    #[test]
    fn negative_holds() {
        let (mut books, a) = valid();
        account(&mut books, a).account.held_minor = -1;
        broken(&books, Invariant::HoldsNonNegative);
    }

    #[test]
    fn negative_overdraft_limit() {
        let (mut books, a) = valid();
        account(&mut books, a).account.overdraft_limit_minor = -1;
        broken(&books, Invariant::OverdraftLimitNonNegative);
    }

    #[test]
    fn beyond_the_overdraft_limit() {
        let (mut books, a) = valid();
        account(&mut books, a).account.held_minor = 7_001;
        broken(&books, Invariant::WithinOverdraft);
    }

    #[test]
    fn system_kind_of_a_customer_account() {
        let (mut books, a) = valid();
        account(&mut books, a).account.kind = AccountKind::System;
        broken(&books, Invariant::SystemAccountOwner);
    }

    #[test]
    fn a_change_without_an_event() {
        let (mut books, a) = valid();
        account(&mut books, a).account.version += 1;
        broken(&books, Invariant::VersionCountsEvents);
    }

    #[test]
    fn a_missing_or_misnumbered_event() {
        let (mut books, a) = valid();
        history(&mut books, a).events.pop();
        broken(&books, Invariant::EventSequence);
        let (mut books, a) = valid();
        history(&mut books, a).events[1].seq = 7;
        broken(&books, Invariant::EventSequence);
    }

    #[test]
    fn postings_out_of_order() {
        let (mut books, a) = valid();
        let postings = &mut history(&mut books, a).postings;
        postings[1].seq = postings[0].seq;
        broken(&books, Invariant::PostingsInOrder);
    }

    #[test]
    fn a_wrong_running_balance() {
        let (mut books, a) = valid();
        let p = &mut history(&mut books, a).postings[0];
        p.balance_after = Money::new(p.balance_after.amount_minor() + 1, EUR);
        broken(&books, Invariant::RunningBalance);
        let (mut books, a) = valid();
        account(&mut books, a).account.posted_minor -= 1;
        broken(&books, Invariant::RunningBalance);
    }

    #[test]
    fn a_posting_unlike_its_event() {
        let (mut books, a) = valid();
        history(&mut books, a).postings[0].posted_at = now() + chrono::TimeDelta::seconds(1);
        broken(&books, Invariant::PostingMatchesEvent);
    }

    #[test]
    fn a_transfer_without_its_lines() {
        let (mut books, _) = valid();
        let transfers = books.transfers.as_mut().expect("transfers");
        let posted = transfers.iter_mut().find(|t| t.kind == TransferKind::Internal && t.finished_at.is_some());
        posted.expect("the payment").reference = Some("not what the lines say".to_owned());
        broken(&books, Invariant::TransferLines);
    }

    #[test]
    fn a_posting_of_an_unknown_transfer() {
        let (mut books, _) = valid();
        books.transfers.as_mut().expect("transfers").retain(|t| t.kind != TransferKind::Deposit);
        broken(&books, Invariant::PostingOfTransfer);
    }

    #[test]
    fn holds_without_their_pending_transfer() {
        let (mut books, _) = valid();
        books.transfers.as_mut().expect("transfers").retain(|t| t.hold_until.is_none());
        broken(&books, Invariant::HoldsArePending);
    }

    #[test]
    fn an_event_twice_in_the_outbox() {
        let (mut books, _) = valid();
        let outbox = books.outbox.as_mut().expect("an outbox");
        let again = OutboxEntry { position: 1_000, ..outbox[0].clone() };
        outbox.push(again);
        broken(&books, Invariant::OutboxOnce);
    }

    #[test]
    fn an_event_missing_from_the_outbox() {
        let (mut books, _) = valid();
        books.outbox.as_mut().expect("an outbox").pop();
        broken(&books, Invariant::OutboxHoldsEvents);
    }

    #[test]
    fn an_event_of_an_account_that_does_not_exist() {
        let (mut books, a) = valid();
        books.accounts.retain(|x| x.account.id != a);
        books.transfers = None;
        books.totals = None;
        broken(&books, Invariant::OutboxHoldsEvents);
    }

    #[test]
    fn balances_that_do_not_sum_to_zero() {
        let (mut books, _) = valid();
        books.totals.as_mut().expect("totals")[0].posted_minor = 1;
        broken(&books, Invariant::CurrencySumsToZero);
        // The accounts alone, over the whole ledger.
        let (mut books, a) = valid();
        books.outbox = None;
        books.totals = None;
        books.transfers = None;
        let a = account(&mut books, a);
        a.history = None;
        a.account.posted_minor += 1;
        broken(&books, Invariant::CurrencySumsToZero);
    }

    #[test]
    fn totals_unlike_the_accounts() {
        let (mut books, _) = valid();
        books.totals.as_mut().expect("totals")[0].accounts += 1;
        broken(&books, Invariant::TotalsMatchAccounts);
        let (mut books, _) = valid();
        let totals = books.totals.as_mut().expect("totals");
        totals.push(totals[0]);
        broken(&books, Invariant::TotalsMatchAccounts);
    }

    /// A part of a ledger is not held to what only the whole ledger keeps.
    #[test]
    fn a_part_is_checked_as_a_part() {
        let (mut books, a) = valid();
        books.scope = Scope::Part;
        books.accounts.retain(|x| x.account.id == a);
        books.totals = None;
        assert_eq!(check(&books), Ok(()));
    }

    /// The effects of a command that a store would write wrongly are caught before it writes.
    #[test]
    fn effects_that_break_an_account() {
        let (books, a) = valid();
        let mut state = LedgerState::new();
        for x in &books.accounts {
            state.insert_account(x.account.clone());
        }
        let mut decision = decide(&state, &transfer(SystemAccount::Funding.id(EUR), a, 500, false), now())
            .map(|d| d.effects)
            .unwrap_or_else(|e| panic!("a deposit: {e}"));
        assert!(decision.accounts.iter().any(|(_, x)| x.id == a), "the payee is written");
        for (_, x) in decision.accounts.iter_mut().filter(|(_, x)| x.id == a) {
            x.posted_minor += 1;
        }
        broken(&Books::of_effects(&state, &decision), Invariant::RunningBalance);
    }

    /// A violation says which invariant and where, and no balance or amount.
    #[test]
    fn a_violation_names_ids_not_amounts() {
        let (mut books, a) = valid();
        account(&mut books, a).account.held_minor = 7_001;
        let shown = check(&books).map_err(|v| v.to_string()).expect_err("broken");
        assert!(shown.contains(&a.to_string()) && shown.contains("overdraft"), "{shown}");
        assert!(!shown.contains("7001") && !shown.contains("70.01"), "{shown}");
    }
}
