//! The commands that change the ledger and what they return. Every store applies them through
//! [`crate::rules::decide`], so the rules are written once.

use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountStatus, NewAccount};
use crate::customer::{Customer, CustomerUpdate, NewCustomer};
use crate::ids::{AccountId, CustomerId, TransferId};
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
}
