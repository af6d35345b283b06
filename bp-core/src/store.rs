//! The storage trait every adapter implements, and the history query it answers.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::account::Account;
use crate::account_number::AccountNumber;
use crate::command::{Command, Executed};
use crate::customer::{Customer, Username};
use crate::error::{Error, LedgerError, StoreError};
use crate::event::Event;
use crate::ids::{AccountId, CustomerId, TransferId};
use crate::lease::Lease;
use crate::money::Currency;
use crate::transfer::{Direction, Posting, Transfer, TransferKind};

/// Default number of history lines in a page.
pub const PAGE_LEN_DEFAULT: u32 = 50;
/// Largest page of history lines or events a store returns.
pub const PAGE_LEN_MAX: u32 = 500;

/// The bounds every paged, time-filtered list checks (transfers history, service records): a
/// `limit` of 1 to [`PAGE_LEN_MAX`], and `from` before `to`.
pub(crate) fn check_page(
    limit: Option<u32>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<(), LedgerError> {
    if limit.is_some_and(|l| l == 0 || l > PAGE_LEN_MAX) {
        return Err(LedgerError::InvalidField { field: "limit", reason: "must be between 1 and 500" });
    }
    if empty_range(from, to) {
        return Err(LedgerError::InvalidField { field: "from", reason: "must be before 'to'" });
    }
    Ok(())
}

/// Whether `from`..`to` holds no instant (`from` not before `to`): [`check_page`] refuses it,
/// and the API answers it with an empty page.
pub(crate) fn empty_range(from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    matches!((from, to), (Some(f), Some(t)) if f >= t)
}

/// The page length a list uses for `limit`: [`PAGE_LEN_DEFAULT`] when absent, within bounds.
pub(crate) fn page_len(limit: Option<u32>) -> u32 {
    limit.unwrap_or(PAGE_LEN_DEFAULT).clamp(1, PAGE_LEN_MAX)
}

/// Which lines of an account's history to return, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only lines posted at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// Only lines posted before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    /// Only debits or only credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only lines of at least this amount, in minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_min_minor: Option<i64>,
    /// Only lines of at most this amount, in minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_max_minor: Option<i64>,
    /// Only lines of this transfer kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TransferKind>,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
    /// Page length, 1 to [`PAGE_LEN_MAX`]; [`PAGE_LEN_DEFAULT`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl HistoryQuery {
    /// Checks the query's bounds.
    pub fn validate(&self) -> Result<(), LedgerError> {
        check_page(self.limit, self.from, self.to)?;
        if self.amount_min_minor.is_some_and(|m| m < 0) || self.amount_max_minor.is_some_and(|m| m < 0) {
            return Err(LedgerError::InvalidField { field: "amount", reason: "bounds must not be negative" });
        }
        if let (Some(min), Some(max)) = (self.amount_min_minor, self.amount_max_minor)
            && min > max
        {
            return Err(LedgerError::InvalidField { field: "amount_min", reason: "must not exceed amount_max" });
        }
        Ok(())
    }

    /// [`validate`](Self::validate) for an API that answers an empty range with an empty page
    /// instead of an error: every parameter is checked, but `from` ≥ `to` or `amount_min` >
    /// `amount_max` is not refused. Answers whether the range is empty (nothing can match).
    pub fn validate_unless_empty(&self) -> Result<bool, LedgerError> {
        let empty_dates = empty_range(self.from, self.to);
        let empty_amounts = matches!((self.amount_min_minor, self.amount_max_minor), (Some(a), Some(b)) if a > b);
        let mut rest = self.clone();
        if empty_dates {
            (rest.from, rest.to) = (None, None);
        }
        if empty_amounts {
            // Both bounds are still checked (for sign), in an order that is not empty.
            std::mem::swap(&mut rest.amount_min_minor, &mut rest.amount_max_minor);
        }
        rest.validate()?;
        Ok(empty_dates || empty_amounts)
    }

    /// The page length to use.
    pub fn limit(&self) -> u32 {
        page_len(self.limit)
    }

    /// Whether `p` passes the filters (the cursor included). Stores that filter in their query
    /// language must agree with this; the conformance suite checks that they do.
    pub fn matches(&self, p: &Posting) -> bool {
        let amount = p.amount.amount_minor();
        self.before_seq.is_none_or(|c| p.seq < c)
            && self.from.is_none_or(|t| p.posted_at >= t)
            && self.to.is_none_or(|t| p.posted_at < t)
            && self.direction.is_none_or(|d| p.direction == d)
            && self.amount_min_minor.is_none_or(|m| amount >= m)
            && self.amount_max_minor.is_none_or(|m| amount <= m)
            && self.kind.is_none_or(|k| p.kind == k)
    }
}

/// One page of results, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `before_seq` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

impl Page<Posting> {
    /// A page of at most `limit` lines from lines fetched newest first, up to `limit + 1` of them:
    /// the one past the limit shows there is more, and the last line kept is the cursor.
    pub fn from_overfetch(mut items: Vec<Posting>, limit: usize) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|p| p.seq)
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

/// The sum of all balances of one currency. The ledger keeps both sums at zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTotal {
    /// The currency.
    pub currency: Currency,
    /// Sum of posted balances of every account in this currency.
    pub posted_minor: i128,
    /// Number of accounts in this currency.
    pub accounts: u64,
}

impl CurrencyTotal {
    /// The totals of `accounts`, one per currency, sorted by currency.
    pub fn sum_of<'a>(accounts: impl IntoIterator<Item = &'a Account>) -> Vec<CurrencyTotal> {
        let mut totals: Vec<CurrencyTotal> = Vec::new();
        for a in accounts {
            let i = match totals.binary_search_by_key(&a.currency, |t| t.currency) {
                Ok(i) => i,
                Err(i) => {
                    totals.insert(i, CurrencyTotal { currency: a.currency, posted_minor: 0, accounts: 0 });
                    i
                }
            };
            totals[i].posted_minor += i128::from(a.posted_minor);
            totals[i].accounts += 1;
        }
        totals
    }
}

/// An event with its position in the store's outbox (a global, increasing number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Position in the outbox; the relay resumes after the last one it published.
    pub position: u64,
    /// The event.
    pub event: Event,
}

/// A ledger store: applies commands atomically and durably through [`crate::rules::decide`], and
/// answers reads. Every adapter passes the conformance suite in `bp_core::testing`.
///
/// Errors: a rejected command is an [`Error::Ledger`] naming the rule. Any method may fail for the
/// store's own reasons ([`StoreErrorKind`](crate::StoreErrorKind) `Unavailable`, `Overloaded`,
/// `Closed`, `Corrupt`, and for a write `StorageFull` or `ReadOnly`); `cursor` and `set_cursor`
/// answer `InvalidRequest` for a malformed name or position. No method answers `Conflict`: a
/// taken id is a rule of the ledger (`IdempotencyConflict`, `UsernameTaken`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Decides `cmd` with the rules and, if accepted, writes its effects atomically and durably
    /// before answering. A rejected command changes nothing.
    async fn execute(&self, cmd: Command) -> Result<Executed, Error>;

    /// A customer by id.
    async fn customer(&self, id: CustomerId) -> Result<Option<Customer>, StoreError>;

    /// A customer by username.
    async fn customer_by_username(&self, username: &Username) -> Result<Option<Customer>, StoreError>;

    /// An account by id.
    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError>;

    /// An account by its number.
    async fn account_by_number(&self, number: AccountNumber) -> Result<Option<Account>, StoreError>;

    /// A customer's accounts, oldest first.
    async fn accounts_of(&self, customer: CustomerId) -> Result<Vec<Account>, StoreError>;

    /// A transfer by id.
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError>;

    /// A page of an account's postings, newest first, filtered by `query` (already validated).
    async fn postings(&self, account: AccountId, query: &HistoryQuery) -> Result<Page<Posting>, StoreError>;

    /// An account's events with `seq > after_seq`, oldest first, at most `limit` (and at most
    /// [`PAGE_LEN_MAX`]).
    async fn events_after(&self, account: AccountId, after_seq: u64, limit: u32) -> Result<Vec<Event>, StoreError>;

    /// Outbox entries with `position > after`, in commit order, at most `limit` (and at most
    /// [`PAGE_LEN_MAX`]).
    async fn outbox_after(&self, after: u64, limit: u32) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Pending transfers whose hold ended before `now`, at most `limit` (and at most
    /// [`PAGE_LEN_MAX`]): for the expiry sweeper.
    async fn pending_expired(&self, now: Timestamp, limit: u32) -> Result<Vec<TransferId>, StoreError>;

    /// The pending transfers that `account` pays (its debit side), oldest first (by `created_at`,
    /// then id), at most `limit` (and at most [`PAGE_LEN_MAX`]); none for an unknown account.
    /// A pending transfer is listed for its payer only: its payee sees it once it is posted. A
    /// hold that has ended is listed until it is voided, since it holds the money until then.
    async fn pending_of(&self, account: AccountId, limit: u32) -> Result<Vec<Transfer>, StoreError>;

    /// The sum of posted balances per currency (the ledger keeps each at zero).
    async fn totals(&self) -> Result<Vec<CurrencyTotal>, StoreError>;

    /// The outbox position the consumer `name` (such as the outbox relay) has recorded with
    /// [`Store::set_cursor`]; 0 when it has recorded none.
    async fn cursor(&self, name: &str) -> Result<u64, StoreError>;

    /// Records, durably, that the consumer `name` is done with the outbox up to `position`. A
    /// cursor only moves forward: an older position than the recorded one changes nothing.
    async fn set_cursor(&self, name: &str, position: u64) -> Result<(), StoreError>;

    /// Grants, renews or refuses the lease `name` to `holder` at `now` for `ms` milliseconds,
    /// atomically, deciding with [`lease::decide`](crate::lease::decide): the lease as it is
    /// afterwards (held by another when `lease.holder != holder`). `InvalidRequest` for a
    /// malformed name, holder or length ([`crate::lease::check_lease_name`], [`crate::lease::check_lease_ms`]).
    async fn acquire_lease(&self, name: &str, holder: &str, now: Timestamp, ms: u32) -> Result<Lease, StoreError>;

    /// Ends the lease `name` at `now` if `holder` holds it with `token` (deciding with
    /// [`lease::releases`](crate::lease::releases)), so that another process may take it at once; false, changing
    /// nothing, otherwise.
    async fn release_lease(&self, name: &str, holder: &str, token: u64, now: Timestamp) -> Result<bool, StoreError>;
}

/// Longest consumer name of [`Store::cursor`], in bytes.
pub const CURSOR_NAME_LEN_MAX: usize = 64;

/// Checks a consumer name of [`Store::cursor`]: 1 to 64 bytes of `a-z`, `0-9`, `.`, `_`, `-`.
pub fn check_cursor_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= CURSOR_NAME_LEN_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::new(
            crate::StoreErrorKind::InvalidRequest,
            "a cursor name is 1 to 64 characters of a-z, 0-9, '.', '_' or '-'",
        ))
    }
}

/// The [`Store`] reads over a ledger kept in memory (the memory store; a replica of the
/// MongoDB store's shared log), written once so that every in-memory store answers alike:
/// the page bounds, the order, the expiry rule.
pub mod in_memory {
    use super::{HistoryQuery, OutboxEntry, PAGE_LEN_MAX, Page};
    use crate::Timestamp;
    use crate::event::Event;
    use crate::ids::{AccountId, TransferId};
    use crate::transfer::{Posting, Transfer, TransferState};

    fn limit_of(limit: u32) -> usize {
        usize::try_from(limit.min(PAGE_LEN_MAX)).unwrap_or(usize::MAX)
    }

    /// [`Store::postings`](super::Store::postings) of one account's `lines`, oldest first.
    pub fn history_page(lines: &[Posting], query: &HistoryQuery) -> Page<Posting> {
        let limit = usize::try_from(query.limit()).unwrap_or(usize::MAX);
        let items = lines.iter().rev().filter(|p| query.matches(p)).take(limit + 1).cloned().collect();
        Page::from_overfetch(items, limit)
    }

    /// [`Store::events_after`](super::Store::events_after) of one account's `events`, in
    /// sequence order.
    pub fn events_after(events: &[Event], after_seq: u64, limit: u32) -> Vec<Event> {
        let start = events.partition_point(|e| e.seq <= after_seq);
        events[start..].iter().take(limit_of(limit)).cloned().collect()
    }

    /// [`Store::outbox_after`](super::Store::outbox_after) of the whole `outbox`, in order
    /// (position `n` is `outbox[n - 1]`).
    pub fn outbox_after(outbox: &[Event], after: u64, limit: u32) -> Vec<OutboxEntry> {
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(outbox.len());
        outbox[start..]
            .iter()
            .zip(after.saturating_add(1)..)
            .take(limit_of(limit))
            .map(|(e, position)| OutboxEntry { position, event: e.clone() })
            .collect()
    }

    /// [`Store::pending_expired`](super::Store::pending_expired) among `transfers`: pending
    /// with a deadline before `now`, the earliest first.
    pub fn pending_expired<'a>(
        transfers: impl Iterator<Item = &'a Transfer>,
        now: Timestamp,
        limit: u32,
    ) -> Vec<TransferId> {
        let mut due: Vec<&Transfer> =
            transfers.filter(|t| t.state == TransferState::Pending && t.hold_until.is_some_and(|u| u < now)).collect();
        due.sort_by_key(|t| (t.hold_until, t.id));
        due.into_iter().take(limit_of(limit)).map(|t| t.id).collect()
    }

    /// [`Store::pending_of`](super::Store::pending_of) among `transfers`: `account`'s pending
    /// debits, oldest first.
    pub fn pending_of<'a>(
        transfers: impl Iterator<Item = &'a Transfer>,
        account: AccountId,
        limit: u32,
    ) -> Vec<Transfer> {
        let mut pending: Vec<&Transfer> =
            transfers.filter(|t| t.state == TransferState::Pending && t.debit_account == account).collect();
        pending.sort_by_key(|t| (t.created_at, t.id));
        pending.into_iter().take(limit_of(limit)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::HistoryQuery;
    use crate::error::LedgerError;

    /// An empty range answers "empty" instead of an error, and every other parameter is still
    /// checked, both amount bounds included.
    #[test]
    fn an_empty_range_still_checks_the_rest() {
        let day = |d: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 1, d).expect("a date").and_hms_opt(0, 0, 0).expect("a time").and_utc()
        };
        let backwards = HistoryQuery { from: Some(day(2)), to: Some(day(1)), ..HistoryQuery::default() };
        assert_eq!(backwards.validate_unless_empty(), Ok(true));
        assert!(backwards.validate().is_err(), "validate itself still refuses it");
        let amounts =
            HistoryQuery { amount_min_minor: Some(300), amount_max_minor: Some(200), ..HistoryQuery::default() };
        assert_eq!(amounts.validate_unless_empty(), Ok(true));
        assert_eq!(HistoryQuery::default().validate_unless_empty(), Ok(false));
        for bad in [
            HistoryQuery { limit: Some(501), ..backwards.clone() },
            HistoryQuery { limit: Some(0), ..amounts.clone() },
            HistoryQuery { amount_max_minor: Some(-1), ..amounts.clone() },
        ] {
            assert!(matches!(bad.validate_unless_empty(), Err(LedgerError::InvalidField { .. })), "{bad:?}");
        }
    }
}
