//! Mapping between domain values and SQLite columns: enums as small integers, ids as 16-byte
//! blobs, times as microseconds since the epoch, and events rebuilt from journal rows.

use bp_core::Timestamp;
use bp_core::account::{Account, AccountKind, AccountOwner, AccountStatus, Balances, SystemAccount};
use bp_core::account_number::AccountNumber;
use bp_core::event::{EVENT_VERSION, Event, EventBody};
use bp_core::ids::{AccountId, CustomerId, EventId, TransferId};
use bp_core::money::{Currency, Money};
use bp_core::transfer::{Direction, Posting, Transfer, TransferKind, TransferState, VoidReason};
use bp_core::{StoreError, StoreErrorKind};
use rusqlite::Row;
use uuid::Uuid;

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, format!("undecodable {what} in the database"))
}

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn time(us: i64) -> Result<Timestamp, StoreError> {
    chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt("timestamp"))
}

pub(crate) fn uuid(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| corrupt("id"))
}

pub(crate) fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::from_code(code).map_err(|_| corrupt("currency"))
}

macro_rules! int_enum {
    ($to:ident, $from:ident, $ty:ty, $what:literal, { $($variant:path => $n:literal),+ $(,)? }) => {
        pub(crate) fn $to(v: $ty) -> i64 {
            match v { $($variant => $n),+ }
        }
        pub(crate) fn $from(n: i64) -> Result<$ty, StoreError> {
            match n { $($n => Ok($variant),)+ _ => Err(corrupt($what)) }
        }
    };
}

int_enum!(account_kind_to, account_kind_from, AccountKind, "account kind", {
    AccountKind::Current => 0, AccountKind::Savings => 1, AccountKind::System => 2,
});
int_enum!(system_to, system_from, SystemAccount, "system account", {
    SystemAccount::Funding => 0, SystemAccount::InterbankClearing => 1,
    SystemAccount::InternationalClearing => 2, SystemAccount::LoanFunding => 3, SystemAccount::Fees => 4,
});
int_enum!(status_to, status_from, AccountStatus, "account status", {
    AccountStatus::Active => 0, AccountStatus::Frozen => 1, AccountStatus::Closed => 2,
});
int_enum!(transfer_kind_to, transfer_kind_from, TransferKind, "transfer kind", {
    TransferKind::Internal => 0, TransferKind::Deposit => 1, TransferKind::Withdrawal => 2,
    TransferKind::Interbank => 3, TransferKind::International => 4, TransferKind::Loan => 5,
    TransferKind::Fee => 6,
});
int_enum!(state_to, state_from, TransferState, "transfer state", {
    TransferState::Pending => 0, TransferState::Posted => 1, TransferState::Voided => 2,
    TransferState::Failed => 3,
});
int_enum!(reason_to, reason_from, VoidReason, "void reason", {
    VoidReason::Cancelled => 0, VoidReason::Expired => 1, VoidReason::Rejected => 2,
});
int_enum!(direction_to, direction_from, Direction, "direction", {
    Direction::Debit => 0, Direction::Credit => 1,
});

/// Journal row types.
pub(crate) const ENTRY_OPENED: i64 = 1;
pub(crate) const ENTRY_STATUS: i64 = 2;
pub(crate) const ENTRY_POSTED: i64 = 3;
pub(crate) const ENTRY_PENDING: i64 = 4;
pub(crate) const ENTRY_VOIDED: i64 = 5;

/// The columns of [`account_from_row`], in order, for `SELECT`s on `accounts a` joined with
/// `customers c` on the owner.
pub(crate) const ACCOUNT_COLUMNS: &str = "a.key, a.id, a.serial, c.id, a.system_kind, a.kind, a.currency, a.status, \
     a.posted_minor, a.held_minor, a.overdraft_limit_minor, a.last_event_seq, a.version, a.opened_at";

pub(crate) fn u64_col(row: &Row<'_>, i: usize) -> Result<u64, StoreError> {
    let v: i64 = row.get(i).map_err(super::sql_err)?;
    u64::try_from(v).map_err(|_| corrupt("counter"))
}

/// An account and its row key from a row of [`ACCOUNT_COLUMNS`].
pub(crate) fn account_from_row(row: &Row<'_>) -> Result<(i64, Account), StoreError> {
    let get_err = super::sql_err;
    let key: i64 = row.get(0).map_err(get_err)?;
    let id: Vec<u8> = row.get(1).map_err(get_err)?;
    let serial = u64_col(row, 2)?;
    let customer: Option<Vec<u8>> = row.get(3).map_err(get_err)?;
    let system: Option<i64> = row.get(4).map_err(get_err)?;
    let owner = match (customer, system) {
        (Some(c), None) => AccountOwner::Customer { customer_id: CustomerId::from_uuid(uuid(&c)?) },
        (None, Some(s)) => AccountOwner::Bank { system: system_from(s)? },
        _ => return Err(corrupt("account owner")),
    };
    let code: String = row.get(6).map_err(get_err)?;
    let account = Account {
        id: AccountId::from_uuid(uuid(&id)?),
        number: AccountNumber::from_serial(serial).map_err(|_| corrupt("account number"))?,
        owner,
        kind: account_kind_from(row.get(5).map_err(get_err)?)?,
        currency: currency(&code)?,
        status: status_from(row.get(7).map_err(get_err)?)?,
        posted_minor: row.get(8).map_err(get_err)?,
        held_minor: row.get(9).map_err(get_err)?,
        overdraft_limit_minor: row.get(10).map_err(get_err)?,
        last_event_seq: u64_col(row, 11)?,
        version: u64_col(row, 12)?,
        opened_at: time(row.get(13).map_err(get_err)?)?,
    };
    Ok((key, account))
}

/// The columns of [`transfer_from_row`], for `transfers t` joined with `accounts d` (debit) and
/// `accounts c` (credit).
pub(crate) const TRANSFER_COLUMNS: &str = "t.key, t.id, t.kind, d.id, c.id, t.amount_minor, d.currency, t.reference, \
     t.state, t.hold_until, t.void_reason, t.created_at, t.finished_at";

/// A transfer and its row key from a row of [`TRANSFER_COLUMNS`].
pub(crate) fn transfer_from_row(row: &Row<'_>) -> Result<(i64, Transfer), StoreError> {
    let get_err = super::sql_err;
    let key: i64 = row.get(0).map_err(get_err)?;
    let id: Vec<u8> = row.get(1).map_err(get_err)?;
    let debit: Vec<u8> = row.get(3).map_err(get_err)?;
    let credit: Vec<u8> = row.get(4).map_err(get_err)?;
    let code: String = row.get(6).map_err(get_err)?;
    let hold_until: Option<i64> = row.get(9).map_err(get_err)?;
    let void_reason: Option<i64> = row.get(10).map_err(get_err)?;
    let finished_at: Option<i64> = row.get(12).map_err(get_err)?;
    let transfer = Transfer {
        id: TransferId::from_uuid(uuid(&id)?),
        kind: transfer_kind_from(row.get(2).map_err(get_err)?)?,
        debit_account: AccountId::from_uuid(uuid(&debit)?),
        credit_account: AccountId::from_uuid(uuid(&credit)?),
        amount: Money::new(row.get(5).map_err(get_err)?, currency(&code)?),
        reference: row.get(7).map_err(get_err)?,
        state: state_from(row.get(8).map_err(get_err)?)?,
        hold_until: hold_until.map(time).transpose()?,
        void_reason: void_reason.map(reason_from).transpose()?,
        created_at: time(row.get(11).map_err(get_err)?)?,
        finished_at: finished_at.map(time).transpose()?,
    };
    Ok((key, transfer))
}

/// The columns of [`entry_from_row`], for `entries e` joined with `accounts a` (the account),
/// `transfers t` and `accounts x` (the counterparty).
pub(crate) const ENTRY_COLUMNS: &str = "e.position, e.seq, e.type, e.at, e.amount_minor, e.code, e.posted_after, e.held_after, \
     a.id, a.currency, t.id, t.kind, x.id, t.reference";

/// A decoded journal row.
pub(crate) struct EntryRow {
    pub position: u64,
    pub event: Event,
    pub reference: Option<String>,
}

/// An event (and its outbox position) from a row of [`ENTRY_COLUMNS`].
pub(crate) fn entry_from_row(row: &Row<'_>) -> Result<EntryRow, StoreError> {
    let get_err = super::sql_err;
    let position = u64_col(row, 0)?;
    let seq = u64_col(row, 1)?;
    let kind: i64 = row.get(2).map_err(get_err)?;
    let at = time(row.get(3).map_err(get_err)?)?;
    let amount_minor: Option<i64> = row.get(4).map_err(get_err)?;
    let code: Option<i64> = row.get(5).map_err(get_err)?;
    let posted: i64 = row.get(6).map_err(get_err)?;
    let held: i64 = row.get(7).map_err(get_err)?;
    let account: Vec<u8> = row.get(8).map_err(get_err)?;
    let cur = currency(&row.get::<_, String>(9).map_err(get_err)?)?;
    let transfer: Option<Vec<u8>> = row.get(10).map_err(get_err)?;
    let transfer_kind: Option<i64> = row.get(11).map_err(get_err)?;
    let counterparty: Option<Vec<u8>> = row.get(12).map_err(get_err)?;
    let reference: Option<String> = row.get(13).map_err(get_err)?;

    let account_id = AccountId::from_uuid(uuid(&account)?);
    let balances = Balances {
        posted: Money::new(posted, cur),
        held: Money::new(held, cur),
        available: Money::new(posted.saturating_sub(held), cur),
    };
    let amount = || amount_minor.map(|a| Money::new(a, cur)).ok_or_else(|| corrupt("entry amount"));
    let transfer_id = || -> Result<TransferId, StoreError> {
        Ok(TransferId::from_uuid(uuid(transfer.as_deref().ok_or_else(|| corrupt("entry transfer"))?)?))
    };
    let kind_of = || transfer_kind.ok_or_else(|| corrupt("entry transfer")).and_then(transfer_kind_from);
    let counterparty_id = || -> Result<AccountId, StoreError> {
        Ok(AccountId::from_uuid(uuid(counterparty.as_deref().ok_or_else(|| corrupt("entry counterparty"))?)?))
    };
    let code = || code.ok_or_else(|| corrupt("entry code"));
    let body = match kind {
        ENTRY_OPENED => EventBody::AccountOpened { balances },
        ENTRY_STATUS => EventBody::AccountStatusChanged { status: status_from(code()?)? },
        ENTRY_POSTED => EventBody::TransferPosted {
            transfer_id: transfer_id()?,
            kind: kind_of()?,
            direction: direction_from(code()?)?,
            amount: amount()?,
            counterparty: counterparty_id()?,
            balances,
        },
        ENTRY_PENDING => EventBody::TransferPending {
            transfer_id: transfer_id()?,
            kind: kind_of()?,
            amount: amount()?,
            counterparty: counterparty_id()?,
            balances,
        },
        ENTRY_VOIDED => EventBody::TransferVoided {
            transfer_id: transfer_id()?,
            reason: reason_from(code()?)?,
            amount: amount()?,
            balances,
        },
        _ => return Err(corrupt("entry type")),
    };
    let event = Event { id: EventId::derive(account_id, seq), account_id, seq, version: EVENT_VERSION, at, body };
    Ok(EntryRow { position, event, reference })
}

/// The posting a `transfer.posted` event records.
pub(crate) fn posting_from_entry(entry: EntryRow) -> Result<Posting, StoreError> {
    match entry.event.body {
        EventBody::TransferPosted { transfer_id, kind, direction, amount, counterparty, balances } => Ok(Posting {
            seq: entry.event.seq,
            account_id: entry.event.account_id,
            transfer_id,
            kind,
            direction,
            amount,
            balance_after: balances.posted,
            counterparty,
            reference: entry.reference,
            posted_at: entry.event.at,
        }),
        _ => Err(corrupt("posting")),
    }
}
