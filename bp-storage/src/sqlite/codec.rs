//! Mapping between domain values and SQLite columns: enums as small integers, ids as 16-byte
//! blobs, times as microseconds since the epoch, and events rebuilt from journal rows.

use bp_core::Timestamp;
use bp_core::account::{Account, AccountKind, AccountOwner, AccountStatus, Balances, SystemAccount};
use bp_core::account_number::AccountNumber;
use bp_core::event::{EVENT_VERSION, Event, EventBody};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::money::{Currency, Money};
use bp_core::security::RefreshTokenState;
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
    SystemAccount::FxPosition => 5, SystemAccount::InterestIncome => 6, SystemAccount::LoanReceivable => 7,
});
int_enum!(status_to, status_from, AccountStatus, "account status", {
    AccountStatus::Active => 0, AccountStatus::Frozen => 1, AccountStatus::Closed => 2,
});
int_enum!(transfer_kind_to, transfer_kind_from, TransferKind, "transfer kind", {
    TransferKind::Internal => 0, TransferKind::Deposit => 1, TransferKind::Withdrawal => 2,
    TransferKind::Interbank => 3, TransferKind::International => 4, TransferKind::Loan => 5,
    TransferKind::Fee => 6, TransferKind::Fx => 7, TransferKind::Interest => 8,
});
int_enum!(state_to, state_from, TransferState, "transfer state", {
    TransferState::Pending => 0, TransferState::Posted => 1, TransferState::Voided => 2,
    TransferState::Failed => 3,
});
int_enum!(reason_to, reason_from, VoidReason, "void reason", {
    VoidReason::Cancelled => 0, VoidReason::Expired => 1, VoidReason::Rejected => 2,
});
int_enum!(token_state_to, token_state_from, RefreshTokenState, "refresh token state", {
    RefreshTokenState::Active => 0, RefreshTokenState::Used => 1, RefreshTokenState::Revoked => 2,
});

/// Journal row kinds.
pub(crate) const KIND_OPENED: i64 = 1;
pub(crate) const KIND_STATUS: i64 = 2;
pub(crate) const KIND_POSTED: i64 = 3;
pub(crate) const KIND_PENDING: i64 = 4;
pub(crate) const KIND_VOIDED: i64 = 5;
/// A `service.updated` event: its body is the row's JSON `doc`.
pub(crate) const KIND_SERVICE: i64 = 6;

/// The columns of [`account_from_row`], in order, for `SELECT`s on `accounts a` joined with
/// `customers c` on the owner.
pub(crate) const ACCOUNT_COLUMNS: &str = "a.key, a.id, a.serial, c.id, a.system_kind, a.kind, a.currency, a.status, \
     a.posted_minor, a.held_minor, a.overdraft_limit_minor, a.last_event_seq, a.opened_at";

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
        // Every change of an account is an event, so its version is its latest event's number.
        version: u64_col(row, 11)?,
        opened_at: time(row.get(12).map_err(get_err)?)?,
    };
    Ok((key, account))
}

/// The columns of [`transfer_from_row`], for `transfers t` joined with `accounts d` (debit) and
/// `accounts c` (credit).
pub(crate) const TRANSFER_COLUMNS: &str = "t.id, t.kind, d.id, c.id, t.amount_minor, d.currency, t.reference, \
     t.state, t.hold_until, t.void_reason, t.created_at, t.finished_at";

/// A transfer from a row of [`TRANSFER_COLUMNS`].
pub(crate) fn transfer_from_row(row: &Row<'_>) -> Result<Transfer, StoreError> {
    let get_err = super::sql_err;
    let id: Vec<u8> = row.get(0).map_err(get_err)?;
    let debit: Vec<u8> = row.get(2).map_err(get_err)?;
    let credit: Vec<u8> = row.get(3).map_err(get_err)?;
    let code: String = row.get(5).map_err(get_err)?;
    let hold_until: Option<i64> = row.get(8).map_err(get_err)?;
    let void_reason: Option<i64> = row.get(9).map_err(get_err)?;
    let finished_at: Option<i64> = row.get(11).map_err(get_err)?;
    Ok(Transfer {
        id: TransferId::from_uuid(uuid(&id)?),
        kind: transfer_kind_from(row.get(1).map_err(get_err)?)?,
        debit_account: AccountId::from_uuid(uuid(&debit)?),
        credit_account: AccountId::from_uuid(uuid(&credit)?),
        amount: Money::new(row.get(4).map_err(get_err)?, currency(&code)?),
        reference: row.get(6).map_err(get_err)?,
        state: state_from(row.get(7).map_err(get_err)?)?,
        hold_until: hold_until.map(time).transpose()?,
        void_reason: void_reason.map(reason_from).transpose()?,
        created_at: time(row.get(10).map_err(get_err)?)?,
        finished_at: finished_at.map(time).transpose()?,
    })
}

/// One side of a journal entry: an event of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Side {
    pub key: i64,
    pub seq: u64,
    pub posted: i64,
    pub held: i64,
}

/// A journal entry with its accounts' ids: what events and postings are rebuilt from.
#[derive(Clone, Debug)]
pub(crate) struct JournalRow {
    pub position: i64,
    pub kind: i64,
    pub at: Timestamp,
    pub amount_minor: Option<i64>,
    pub code: Option<i64>,
    pub a: Side,
    pub a_id: AccountId,
    pub currency: Currency,
    pub b: Option<(Side, AccountId)>,
    pub transfer: Option<TransferId>,
    pub transfer_kind: Option<TransferKind>,
    pub transfer_credit: Option<AccountId>,
    pub doc: Option<String>,
}

impl JournalRow {
    /// The entry at `position` with its account keys resolved.
    pub(crate) fn resolve(
        position: i64,
        e: super::journal::Entry,
        keys: &mut super::journal::AccountKeys<'_>,
    ) -> Result<Self, StoreError> {
        let (a_id, currency) = keys.get(e.a.key)?;
        let b = match e.b {
            Some(b) => Some((b, keys.get(b.key)?.0)),
            None => None,
        };
        Ok(Self {
            position,
            kind: e.kind,
            at: time(e.at)?,
            amount_minor: e.amount_minor,
            code: e.code,
            a: e.a,
            a_id,
            currency,
            b,
            transfer: e.transfer_id.map(|id| TransferId::from_uuid(Uuid::from_bytes(id))),
            transfer_kind: e.transfer_kind.map(transfer_kind_from).transpose()?,
            transfer_credit: e.counterparty_key.map(|k| keys.get(k).map(|(id, _)| id)).transpose()?,
            doc: e.doc,
        })
    }

    /// The sides of this row: `(side number, side)`.
    pub(crate) fn sides(&self) -> impl Iterator<Item = (u8, Side)> + '_ {
        std::iter::once((0, self.a)).chain(self.b.map(|(b, _)| (1, b)))
    }

    /// The side of `account_key`, if the row has one.
    pub(crate) fn side_of(&self, account_key: i64) -> Option<u8> {
        self.sides().find(|(_, s)| s.key == account_key).map(|(n, _)| n)
    }

    /// The event of side `n`.
    pub(crate) fn event(&self, n: u8) -> Result<Event, StoreError> {
        let (side, account_id, other) = match (n, &self.b) {
            (0, b) => (self.a, self.a_id, b.as_ref().map(|(_, id)| *id)),
            (1, Some((b, id))) => (*b, *id, Some(self.a_id)),
            _ => return Err(corrupt("journal side")),
        };
        let cur = self.currency;
        let balances = Balances {
            posted: Money::new(side.posted, cur),
            held: Money::new(side.held, cur),
            available: Money::new(side.posted.saturating_sub(side.held), cur),
        };
        let amount = || self.amount_minor.map(|a| Money::new(a, cur)).ok_or_else(|| corrupt("journal amount"));
        let transfer = || {
            Ok::<_, StoreError>((
                self.transfer.ok_or_else(|| corrupt("journal transfer"))?,
                self.transfer_kind.ok_or_else(|| corrupt("journal transfer kind"))?,
            ))
        };
        let code = || self.code.ok_or_else(|| corrupt("journal code"));
        let body = match self.kind {
            KIND_OPENED => EventBody::AccountOpened { balances },
            KIND_STATUS => EventBody::AccountStatusChanged { status: status_from(code()?)? },
            KIND_POSTED => EventBody::TransferPosted {
                transfer_id: transfer()?.0,
                kind: transfer()?.1,
                direction: if n == 0 { Direction::Debit } else { Direction::Credit },
                amount: amount()?,
                counterparty: other.ok_or_else(|| corrupt("journal counterparty"))?,
                balances,
            },
            KIND_PENDING => EventBody::TransferPending {
                transfer_id: transfer()?.0,
                kind: transfer()?.1,
                amount: amount()?,
                counterparty: self.transfer_credit.ok_or_else(|| corrupt("journal counterparty"))?,
                balances,
            },
            KIND_VOIDED => EventBody::TransferVoided {
                transfer_id: self.transfer.ok_or_else(|| corrupt("journal transfer"))?,
                reason: reason_from(code()?)?,
                amount: amount()?,
                balances,
            },
            KIND_SERVICE => {
                let doc = self.doc.as_deref().ok_or_else(|| corrupt("service event"))?;
                let body: EventBody = serde_json::from_str(doc).map_err(|_| corrupt("service event"))?;
                if !matches!(body, EventBody::ServiceUpdated { .. }) {
                    return Err(corrupt("service event"));
                }
                body
            }
            _ => return Err(corrupt("journal kind")),
        };
        Ok(Event { account_id, seq: side.seq, version: EVENT_VERSION, at: self.at, body })
    }

    /// The posting of side `n`, if this row posts money, with its transfer's reference.
    pub(crate) fn posting(&self, n: u8, reference: Option<String>) -> Result<Option<Posting>, StoreError> {
        if self.kind != KIND_POSTED {
            return Ok(None);
        }
        let event = self.event(n)?;
        match event.body {
            EventBody::TransferPosted { transfer_id, kind, direction, amount, counterparty, balances } => {
                Ok(Some(Posting {
                    seq: event.seq,
                    account_id: event.account_id,
                    transfer_id,
                    kind,
                    direction,
                    amount,
                    balance_after: balances.posted,
                    counterparty,
                    reference,
                    posted_at: event.at,
                }))
            }
            _ => Err(corrupt("posting")),
        }
    }
}

/// Most positions in one `account_journal` row.
pub(crate) const RUN_POSITIONS_MAX: usize = 256;

/// Encodes increasing journal positions: the first as a varint, then each difference to the one
/// before (LEB128: seven bits a byte, high bit set on all but the last byte).
pub(crate) fn encode_positions(positions: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(positions.len() * 3);
    let mut before = 0i64;
    for &p in positions {
        assert!(p > before, "journal positions increase");
        put_varint(&mut out, u64::try_from(p - before).unwrap_or(0));
        before = p;
    }
    out
}

/// Appends `v` as a LEB128 varint: seven bits a byte, high bit set on all but the last byte.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = u8::try_from(v & 0x7f).unwrap_or(0);
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Decodes what [`encode_positions`] wrote; `len` is the number of positions expected.
pub(crate) fn decode_positions(bytes: &[u8], len: usize) -> Result<Vec<i64>, StoreError> {
    let mut out = Vec::with_capacity(len);
    let mut value = 0i64;
    let mut delta = 0u64;
    let mut shift = 0u32;
    for &b in bytes {
        if shift > 56 {
            return Err(corrupt("position list"));
        }
        delta |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            value = value
                .checked_add(i64::try_from(delta).map_err(|_| corrupt("position list"))?)
                .ok_or_else(|| corrupt("position list"))?;
            out.push(value);
            delta = 0;
            shift = 0;
        }
    }
    if out.len() != len || shift != 0 {
        return Err(corrupt("position list"));
    }
    Ok(out)
}

/// The snake_case name a value has on the wire, as stored in a text column.
fn wire_name(value: Result<serde_json::Value, serde_json::Error>) -> Result<String, StoreError> {
    match value {
        Ok(serde_json::Value::String(name)) => Ok(name),
        _ => Err(StoreError::new(StoreErrorKind::Corrupt, "cannot encode a name")),
    }
}

/// A service kind's wire name (`interbank_transfer`, …).
pub(crate) fn service_kind_name(kind: bp_core::service_record::ServiceKind) -> Result<String, StoreError> {
    wire_name(serde_json::to_value(kind))
}

/// A service status's wire name (`requested`, …).
pub(crate) fn service_status_name(status: bp_core::service_record::ServiceStatus) -> Result<String, StoreError> {
    wire_name(serde_json::to_value(status))
}

#[cfg(test)]
mod tests {
    use super::{decode_positions, encode_positions};

    #[test]
    fn position_lists_round_trip() {
        for positions in [vec![1], vec![1, 2, 3], vec![5, 130, 131, 20_000, 1 << 40, (1 << 40) + 1, i64::MAX]] {
            let bytes = encode_positions(&positions);
            assert_eq!(decode_positions(&bytes, positions.len()).expect("decodes"), positions);
            assert!(decode_positions(&bytes, positions.len() + 1).is_err(), "a wrong length is caught");
        }
        assert!(decode_positions(&[0x80], 1).is_err(), "a truncated varint is caught");
    }
}
