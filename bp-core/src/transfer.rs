//! Transfers and their state machine, and postings, the double-entry lines they write.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::ids::{AccountId, TransferId};
use crate::money::Money;

/// Upper bound of a transfer's free-text reference, in characters.
pub const REFERENCE_CHARS_MAX: usize = 140;

/// What a transfer is, which decides which accounts it may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Between two customer accounts of this bank (FR5).
    Internal,
    /// Money entering a customer account from the bank's funding account (cash, deposits).
    Deposit,
    /// Money leaving a customer account to the bank's funding account (cash withdrawal).
    Withdrawal,
    /// To or from another domestic bank, through the interbank clearing account.
    Interbank,
    /// To or from a bank abroad, through the international clearing account.
    International,
    /// Loan disbursement or repayment, through the loan funding account.
    Loan,
    /// A fee charged to a customer, credited to the fees account.
    Fee,
    /// A currency conversion leg: a customer's money sold to the bank's FX position in its
    /// currency.
    Fx,
    /// Loan interest paid by a customer, credited to the interest income account.
    Interest,
}

/// Where a transfer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Funds are held on the debit account until the transfer is posted or voided.
    Pending,
    /// Final: the money moved.
    Posted,
    /// Final: cancelled (by the bank, the customer, or expiry); the hold was released.
    Voided,
    /// Final: the external side rejected it; the hold was released.
    Failed,
}

impl TransferState {
    /// Whether no further transition is possible.
    pub fn is_final(self) -> bool {
        !matches!(self, TransferState::Pending)
    }
}

/// Why a pending transfer was voided or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoidReason {
    /// Cancelled by the customer or the bank (ends `voided`).
    Cancelled,
    /// Its expiry passed before it was posted (ends `voided`).
    Expired,
    /// The external entity rejected it (ends `failed`).
    Rejected,
}

/// A request to move money. Posted at once unless `hold_until` is set, in which case the
/// amount is held on the debit account until the transfer is posted, voided or expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Client-made id: the idempotency key.
    pub id: TransferId,
    /// Kind.
    pub kind: TransferKind,
    /// Account the money leaves.
    pub debit_account: AccountId,
    /// Account the money enters.
    pub credit_account: AccountId,
    /// Amount, positive, in the currency of both accounts.
    pub amount: Money,
    /// Free text shown to both sides (at most 140 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Makes the transfer pending, holding the funds until this time at the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<Timestamp>,
}

/// A transfer as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Client-made id.
    pub id: TransferId,
    /// Kind.
    pub kind: TransferKind,
    /// Account the money leaves.
    pub debit_account: AccountId,
    /// Account the money enters.
    pub credit_account: AccountId,
    /// Amount.
    pub amount: Money,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// State.
    pub state: TransferState,
    /// For pending transfers: the latest time it may be posted. A pending transfer without one
    /// is an external payment's hold ([`Transfer::awaits_external_party`]): it has no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<Timestamp>,
    /// Why it was voided or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void_reason: Option<VoidReason>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl Transfer {
    /// Whether this is an external payment's hold: pending without a deadline, held until the
    /// outside party answers. Only a service request places one (`Command::RequestService`),
    /// and only its lifecycle ends it (`Command::ApplyService`): the hold sweeper never lists
    /// it, and `PostPending` and `VoidPending` refuse it (`HeldForExternalParty`).
    pub fn awaits_external_party(&self) -> bool {
        self.state == TransferState::Pending && self.hold_until.is_none()
    }

    /// Whether `req` is the request that created this transfer.
    pub fn was_requested_by(&self, req: &TransferRequest) -> bool {
        self.id == req.id
            && self.kind == req.kind
            && self.debit_account == req.debit_account
            && self.credit_account == req.credit_account
            && self.amount == req.amount
            && self.reference == req.reference
            // Stores keep times to the microsecond: a retry of the same request compares equal.
            && self.hold_until == req.hold_until.map(crate::clock::truncate_to_micros)
    }
}

/// Which side of a posting an account is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Money left the account.
    Debit,
    /// Money entered the account.
    Credit,
}

/// One line of a double-entry posting: every posted transfer writes a debit line and a credit
/// line of the same amount. The history of an account (FR2) is its lines, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Posting {
    /// The account's event sequence number of this line; the history cursor.
    pub seq: u64,
    /// The account.
    pub account_id: AccountId,
    /// The transfer.
    pub transfer_id: TransferId,
    /// The transfer's kind.
    pub kind: TransferKind,
    /// Debit or credit.
    pub direction: Direction,
    /// Amount (positive).
    pub amount: Money,
    /// The account's posted balance after this line.
    pub balance_after: Money,
    /// The other account of the transfer.
    pub counterparty: AccountId,
    /// The transfer's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// When it was posted.
    pub posted_at: Timestamp,
}

impl Posting {
    /// The signed effect on the account's balance: negative for debits.
    pub fn signed_minor(&self) -> i64 {
        match self.direction {
            Direction::Debit => self.amount.amount_minor().saturating_neg(),
            Direction::Credit => self.amount.amount_minor(),
        }
    }
}
