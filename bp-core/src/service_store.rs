//! The store of external service records (FR3, FR6): [`ServiceStore`], what every store that
//! keeps them answers, and [`ServiceQuery`], the customer's filtered history of them.
//!
//! The writes are ledger commands ([`Command::RequestService`], [`Command::ApplyService`],
//! [`Command::Transfer`] for incoming credits), decided by [`crate::rules::decide`] and written
//! by [`Store::execute`] in the same atomic write as the money they move and the events they
//! emit (the outbox): a hold is never written without its record, nor a record without its
//! hold. This trait adds them as typed calls, and the reads a worker, an operator and the
//! history need.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::command::{Command, Outcome};
use crate::error::{Error, LedgerError, StoreError};
use crate::external::ReasonCode;
use crate::external::incoming::{self, IncomingCredit};
use crate::external::lifecycle::Transition;
use crate::external::payee::BankIbans;
use crate::external::rail::RailId;
use crate::ids::{CustomerId, ServiceRecordId};
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use crate::store::{Page, Store, check_page, empty_range, page_len};
use crate::transfer::Transfer;

/// Which of a customer's service records to list, newest first (`GET /v1/services`, FR3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceQuery {
    /// Only records of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ServiceKind>,
    /// Only records in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
    /// Only records requested at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// Only records requested before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    /// Continue after this cursor (a previous page's `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Page length, 1 to [`PAGE_LEN_MAX`](crate::store::PAGE_LEN_MAX); [`PAGE_LEN_DEFAULT`](crate::store::PAGE_LEN_DEFAULT) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl ServiceQuery {
    /// The page of `customer`'s records this query asks for, newest first, from `order` (every
    /// record's id in the order it was first written; the cursor is a 1-based position in it)
    /// and `view` (the records): the paging of stores that keep their records in memory.
    pub fn page_of(
        &self,
        order: &[ServiceRecordId],
        view: &impl crate::rules::LedgerView,
        customer: CustomerId,
    ) -> Page<ServiceRecord> {
        let limit = usize::try_from(self.limit()).unwrap_or(usize::MAX);
        let end = self.before.map_or(order.len(), |c| usize::try_from(c.saturating_sub(1)).unwrap_or(0));
        let mut items = Vec::new();
        let mut last_cursor = None;
        let mut next_cursor = None;
        for (i, id) in order.iter().enumerate().take(end).rev() {
            let Some(r) = view.service_record(*id) else { continue };
            if r.customer_id != customer || !self.matches(r) {
                continue;
            }
            if items.len() == limit {
                next_cursor = last_cursor;
                break;
            }
            items.push(r.clone());
            last_cursor = u64::try_from(i).ok().map(|i| i + 1);
        }
        Page { items, next_cursor }
    }

    /// Checks the query's bounds.
    pub fn validate(&self) -> Result<(), LedgerError> {
        check_page(self.limit, self.from, self.to)?;
        Ok(())
    }

    /// [`validate`](Self::validate) for an API that answers an empty range with an empty page
    /// instead of an error: every parameter is checked, but `from` ≥ `to` is not refused.
    /// Answers whether the range is empty (nothing can match).
    pub fn validate_unless_empty(&self) -> Result<bool, LedgerError> {
        let empty = empty_range(self.from, self.to);
        let rest = if empty { Self { from: None, to: None, ..self.clone() } } else { self.clone() };
        rest.validate()?;
        Ok(empty)
    }

    /// The page length to use.
    pub fn limit(&self) -> u32 {
        page_len(self.limit)
    }

    /// Whether `r` passes the filters (the cursor, a store's own position, excepted). Stores
    /// that filter in their query language must agree with this; the suite checks that they do.
    pub fn matches(&self, r: &ServiceRecord) -> bool {
        self.kind.is_none_or(|k| r.kind == k)
            && self.status.is_none_or(|s| r.status == s)
            && self.from.is_none_or(|t| r.created_at >= t)
            && self.to.is_none_or(|t| r.created_at < t)
    }
}

/// The answer to [`ServiceStore::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceReceipt {
    /// The record as stored.
    pub record: ServiceRecord,
    /// True when an earlier request with the same id made it (nothing was written now).
    pub replayed: bool,
}

/// What became of an incoming payment ([`ServiceStore::credit_incoming`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncomingOutcome {
    /// Credited to the customer's account from the rail's clearing account.
    Credited {
        /// The posted transfer.
        transfer: Transfer,
        /// True when an earlier delivery of the same payment credited it: nothing moved now.
        replayed: bool,
    },
    /// Not credited: return it to the payer's bank with this ISO reason code.
    Returned {
        /// Why (`AC01`, `AC04`, `AC06`, `AM03`, `AM12`).
        reason: ReasonCode,
    },
}

fn service_of(outcome: Outcome) -> Result<ServiceRecord, Error> {
    match outcome {
        Outcome::Service(record) => Ok(*record),
        other => unreachable!("a service command answers with a service record, not {other:?}"),
    }
}

/// A store of external service records, over the ledger it holds the money of. Every adapter
/// passes the conformance suite `bp_core::testing::services`.
///
/// Lists are bounded: at most `limit`, and at most [`PAGE_LEN_MAX`](crate::store::PAGE_LEN_MAX).
#[async_trait]
pub trait ServiceStore: Store {
    /// A service record by id.
    async fn service_record(&self, id: ServiceRecordId) -> Result<Option<ServiceRecord>, StoreError>;

    /// Records whose next step is due at `now` (`next_check_at <= now`: to submit, or to ask
    /// the party for the status), the longest due first (by `next_check_at`, then id).
    async fn due(&self, now: Timestamp, limit: u32) -> Result<Vec<ServiceRecord>, StoreError>;

    /// Records flagged stuck (`stuck_since` set), the longest stuck first (by `stuck_since`,
    /// then id): for operators.
    async fn stuck(&self, limit: u32) -> Result<Vec<ServiceRecord>, StoreError>;

    /// A page of `customer`'s records, newest first (in the order they were written), filtered
    /// by `query` (already validated); `next_cursor` is present exactly when more match.
    async fn service_records_of(
        &self,
        customer: CustomerId,
        query: &ServiceQuery,
    ) -> Result<Page<ServiceRecord>, StoreError>;

    /// Writes a new request (`external::lifecycle::request`): the hold, the record (status
    /// `requested`: the intent to submit) and its event, in one atomic write. A retry of the
    /// same request replays; see [`Command::RequestService`].
    async fn request(&self, transition: Transition) -> Result<ServiceReceipt, Error> {
        let executed = self.execute(Command::RequestService(Box::new(transition))).await?;
        Ok(ServiceReceipt { replayed: executed.replayed, record: service_of(executed.outcome)? })
    }

    /// Applies a transition computed from the record at `expected_version`: the record, its
    /// money effect and its events in one atomic write; a stale version is refused with
    /// `VersionConflict` and nothing changes. Answers the record as stored.
    async fn apply(
        &self,
        id: ServiceRecordId,
        expected_version: u64,
        transition: Transition,
    ) -> Result<ServiceRecord, Error> {
        let cmd = Command::ApplyService { id, expected_version, transition: Box::new(transition) };
        service_of(self.execute(cmd).await?.outcome)
    }

    /// Credits an incoming payment from `rail` to the account of one of `bank`'s IBANs, or says
    /// why it is returned. Idempotent by the payment's derived transfer id
    /// (`incoming::incoming_transfer_id`): a second delivery moves nothing and answers
    /// `replayed`, even if the account has been frozen since.
    async fn credit_incoming(
        &self,
        bank: &BankIbans,
        rail: RailId,
        credit: &IncomingCredit,
    ) -> Result<IncomingOutcome, Error> {
        let number = match incoming::incoming_account_number(bank, credit) {
            Ok(n) => n,
            Err(reason) => return Ok(IncomingOutcome::Returned { reason }),
        };
        let account = self.account_by_number(number).await?;
        let id = incoming::incoming_transfer_id(rail, credit);
        if let Some(existing) = self.transfer(id).await? {
            let same = account.as_ref().is_some_and(|a| a.id == existing.credit_account)
                && existing.amount == credit.amount
                && existing.debit_account == rail.clearing_account(credit.amount.currency());
            return if same {
                Ok(IncomingOutcome::Credited { transfer: existing, replayed: true })
            } else {
                Err(LedgerError::IdempotencyConflict { id: id.to_string() }.into())
            };
        }
        let request = match incoming::credit_incoming(rail, credit, account.as_ref()) {
            Ok(r) => r,
            Err(reason) => return Ok(IncomingOutcome::Returned { reason }),
        };
        let executed = self.execute(Command::Transfer(request)).await?;
        match executed.outcome {
            Outcome::Transfer(transfer) => Ok(IncomingOutcome::Credited { transfer, replayed: executed.replayed }),
            other => unreachable!("a transfer command answers with a transfer, not {other:?}"),
        }
    }
}
