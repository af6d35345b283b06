//! Errors: rule violations (`LedgerError`), infrastructure failures of a store (`StoreError`), and
//! the union the façade returns (`Error`).

use std::fmt;

use crate::account::AccountStatus;
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::money::{Currency, MoneyError};
use crate::transfer::{TransferKind, TransferState};

/// A request broke a rule of the bank. Nothing was changed.
///
/// Messages name ids and rules, never balances, names or document numbers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A field failed validation.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An amount could not be parsed or computed.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// Transfer amounts must be greater than zero.
    #[error("the amount must be greater than zero")]
    NonPositiveAmount,
    /// A transfer's debit and credit account are the same.
    #[error("debit and credit account must differ")]
    SameAccount,
    /// No such account.
    #[error("account {0} does not exist")]
    AccountNotFound(AccountId),
    /// No such customer.
    #[error("customer {0} does not exist")]
    CustomerNotFound(CustomerId),
    /// No such transfer.
    #[error("transfer {0} does not exist")]
    TransferNotFound(TransferId),
    /// No such service record.
    #[error("service record {0} does not exist")]
    ServiceNotFound(ServiceRecordId),
    /// The pending transfer is an external payment's hold: only its service record's lifecycle
    /// posts or voids it (`Command::ApplyService`), never `PostPending`, `VoidPending` or the
    /// hold sweeper.
    #[error("transfer {transfer} is held for an external party's answer")]
    HeldForExternalParty {
        /// The transfer.
        transfer: TransferId,
    },
    /// The amount's currency is not the account's.
    #[error("account {account} is in {expected}, the amount is in {actual}")]
    CurrencyMismatch {
        /// The account.
        account: AccountId,
        /// Its currency.
        expected: Currency,
        /// The request's currency.
        actual: Currency,
    },
    /// The account cannot move money in its status.
    #[error("account {account} is {status:?}")]
    AccountNotActive {
        /// The account.
        account: AccountId,
        /// Its status.
        status: AccountStatus,
    },
    /// The debit would take the account below its overdraft limit.
    #[error("insufficient funds on account {account}")]
    InsufficientFunds {
        /// The account.
        account: AccountId,
    },
    /// A balance would leave the range of a 64-bit amount.
    #[error("the balance of account {account} would overflow")]
    BalanceOverflow {
        /// The account.
        account: AccountId,
    },
    /// The transfer kind does not fit the accounts.
    #[error("a {kind:?} transfer {reason}")]
    KindNotAllowed {
        /// The kind.
        kind: TransferKind,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The id was used before with a different request.
    #[error("id {id} was already used for a different request")]
    IdempotencyConflict {
        /// The reused id.
        id: String,
    },
    /// The transfer is not in a state that allows this.
    #[error("transfer {transfer} is {from:?} and cannot become {to:?}")]
    InvalidTransition {
        /// The transfer.
        transfer: TransferId,
        /// Its state.
        from: TransferState,
        /// The requested state.
        to: TransferState,
    },
    /// The pending transfer's hold has expired; it can only be voided.
    #[error("the hold of transfer {transfer} has expired")]
    HoldExpired {
        /// The transfer.
        transfer: TransferId,
    },
    /// The hold has not expired yet.
    #[error("the hold of transfer {transfer} has not expired yet")]
    HoldNotExpired {
        /// The transfer.
        transfer: TransferId,
    },
    /// The username belongs to another customer.
    #[error("the username is taken")]
    UsernameTaken,
    /// The record changed since the caller read it.
    #[error("version conflict: expected {expected}, found {actual}")]
    VersionConflict {
        /// The version the caller read.
        expected: u64,
        /// The current version.
        actual: u64,
    },
    /// An account must be empty, with no holds, to close.
    #[error("account {account} still has a balance or holds")]
    AccountNotEmpty {
        /// The account.
        account: AccountId,
    },
}

/// What kind of failure a store met, so callers can act without knowing the backend: whether to
/// retry, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend cannot be reached, is busy or locked, or failed an I/O; retrying later may
    /// succeed. A command that fails so may or may not have been applied: retry it with the same
    /// id.
    Unavailable,
    /// The store's queue is full; back off and retry.
    Overloaded,
    /// The stored data breaks an invariant or cannot be decoded.
    Corrupt,
    /// The database was written by a newer version of bp.
    Incompatible,
    /// The store was shut down.
    Closed,
    /// The request itself is malformed for the store (e.g. a bad cursor, or a record that breaks
    /// a constraint of its schema other than uniqueness). Nothing was changed; the same request
    /// fails again.
    InvalidRequest,
    /// The record conflicts with one that exists: its id or another unique key is taken. Nothing
    /// was changed; the same request fails again, one with a new id may succeed.
    Conflict,
    /// The storage has no room left (a full disk, or the database's size limit). Nothing was
    /// changed. Writes keep failing until an operator makes room, so retrying at once is no use;
    /// reads still work.
    StorageFull,
    /// The storage refuses writes: the database is read-only (a read-only file or mount, or a
    /// file moved or deleted while open). Nothing was changed. Writes keep failing until an
    /// operator fixes it, so retrying at once is no use; reads may still work.
    ReadOnly,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::Overloaded => "store overloaded",
            StoreErrorKind::Corrupt => "stored data is corrupt",
            StoreErrorKind::Incompatible => "incompatible database version",
            StoreErrorKind::Closed => "store closed",
            StoreErrorKind::InvalidRequest => "invalid store request",
            StoreErrorKind::Conflict => "conflicts with a stored record",
            StoreErrorKind::StorageFull => "storage full",
            StoreErrorKind::ReadOnly => "storage read-only",
        })
    }
}

/// An infrastructure failure of a store: a small kind plus the backend's error as the source.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A new error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// A new error of `kind` caused by `source`.
    pub fn with_source(
        kind: StoreErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { kind, message: message.into(), source: Some(Box::new(source)) }
    }

    /// The kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

/// What the ledger façade returns: a broken rule, or a failed store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule of the bank rejected the request; nothing changed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<MoneyError> for Error {
    fn from(e: MoneyError) -> Self {
        Error::Ledger(LedgerError::Money(e))
    }
}

impl Error {
    /// The rule violation, if it is one.
    pub fn as_ledger(&self) -> Option<&LedgerError> {
        match self {
            Error::Ledger(e) => Some(e),
            Error::Store(_) => None,
        }
    }
}
