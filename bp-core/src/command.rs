//! The commands that change the ledger and what they return. Every store applies them through
//! [`crate::rules::decide`], so the rules are written once.

use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountStatus, NewAccount};
use crate::customer::{Customer, CustomerUpdate, NewCustomer};
use crate::external::lifecycle::Transition;
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::service_record::ServiceRecord;
use crate::transfer::{Transfer, TransferRequest, VoidReason};

/// A change to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Open a customer (idempotent by id).
    OpenCustomer(Box<NewCustomer>),
    /// Change a customer's profile.
    UpdateCustomer {
        /// The customer.
        id: CustomerId,
        /// If set, the update applies only if the customer is still at this version.
        expected_version: Option<u64>,
        /// The change.
        update: CustomerUpdate,
    },
    /// Open a customer account (idempotent by id).
    OpenAccount(NewAccount),
    /// Freeze, unfreeze or close an account.
    SetAccountStatus {
        /// The account.
        id: AccountId,
        /// The new status.
        status: AccountStatus,
    },
    /// Move money, at once or as a pending transfer (idempotent by id).
    Transfer(TransferRequest),
    /// Post a pending transfer (idempotent: posting a posted transfer replays).
    PostPending {
        /// The transfer.
        id: TransferId,
    },
    /// Void or fail a pending transfer, releasing its hold (idempotent likewise).
    VoidPending {
        /// The transfer.
        id: TransferId,
        /// Why.
        reason: VoidReason,
    },
    /// Record a new external service request and hold its funds, in one atomic write: the
    /// transition of `external::lifecycle::request` (its record, `requested`, is the intent to
    /// submit; its effects place the hold and emit `service.updated`). Idempotent by the
    /// record's id: the same request again replays, another one with the same id (or the hold's
    /// id taken by another transfer) is an `IdempotencyConflict`. A pending transfer of the same
    /// id placed while the payment awaited SCA, with the same accounts, amount and reference,
    /// becomes the hold (its deadline removed).
    RequestService(Box<Transition>),
    /// Apply a lifecycle transition to a stored record, only if it is still at
    /// `expected_version` (`VersionConflict` otherwise, and nothing changes): the new record,
    /// its money effect (post or void the hold) and its events, in one atomic write.
    ApplyService {
        /// The record.
        id: ServiceRecordId,
        /// The version the transition was computed from.
        expected_version: u64,
        /// The new record and its effects (`Submit` and `QueryStatus` are the caller's to do
        /// after the write; the store ignores them).
        transition: Box<Transition>,
    },
}

/// The record a command produced or found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Outcome {
    /// A customer.
    Customer(Box<Customer>),
    /// An account.
    Account(Account),
    /// A transfer.
    Transfer(Transfer),
    /// A service record.
    Service(Box<ServiceRecord>),
}

/// A command's result as the store answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    /// The resulting record.
    pub outcome: Outcome,
    /// True when the command had been applied before and this is the original result again.
    pub replayed: bool,
}

/// The ids a command needs to see to be decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    /// Customers.
    pub customers: Vec<CustomerId>,
    /// Accounts.
    pub accounts: Vec<AccountId>,
    /// Transfers.
    pub transfers: Vec<TransferId>,
    /// Usernames whose owner must be known.
    pub usernames: Vec<crate::customer::Username>,
    /// Service records.
    pub services: Vec<ServiceRecordId>,
}
