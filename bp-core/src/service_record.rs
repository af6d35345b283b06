//! Service records: the envelope of interbank transfers, international transfers and loans (FR3,
//! FR6), and what the bank knows of each request's life. An interbank payment's record moves
//! through [`crate::external::lifecycle::transition`]; stores keep them through
//! [`crate::service_store::ServiceStore`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::external::ReasonCode;
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::money::Money;

/// Which external service a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// Transfer to another domestic bank.
    InterbankTransfer,
    /// Transfer abroad, with an FX quote and fees.
    InternationalTransfer,
    /// Loan: application, decision, disbursement, schedule, repayment.
    Loan,
}

/// Where a service request is in its life (`docs/external-services.md` has the state machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Funds held and the intent to send it recorded, in one write; not yet sent (or to be
    /// sent again with the same key: the party never received it).
    Requested,
    /// Sent; the party's answer is pending.
    Submitted,
    /// A call's outcome is unknown: the party is asked for it (reconciliation) until it answers.
    Unknown,
    /// The party accepted it: the held funds are posted.
    Accepted,
    /// Final: settled.
    Settled,
    /// Final: the party refused or rejected it: the held funds are released (a loan: declined).
    Rejected,
    /// A loan the provider approved: its offer awaits the customer's acceptance.
    Offered,
    /// A loan disbursed and being repaid, every instalment collected when due.
    Active,
    /// A loan with an instalment due and not collected (insufficient funds): retried.
    InArrears,
    /// Final: a loan repaid in full.
    Closed,
}

impl ServiceStatus {
    /// Whether nothing can change it any more (a late report that disagrees is a conflict).
    pub fn is_final(self) -> bool {
        matches!(self, ServiceStatus::Settled | ServiceStatus::Rejected | ServiceStatus::Closed)
    }

    /// Whether the money is decided: posted (accepted, settled) or released (rejected).
    pub fn money_decided(self) -> bool {
        matches!(self, ServiceStatus::Accepted | ServiceStatus::Settled | ServiceStatus::Rejected)
    }
}

/// A customer's use of an external service, with its linked ledger transfers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    /// Id.
    pub id: ServiceRecordId,
    /// The customer.
    pub customer_id: CustomerId,
    /// Kind of service.
    pub kind: ServiceKind,
    /// Status.
    pub status: ServiceStatus,
    /// The customer's account involved.
    pub account_id: AccountId,
    /// The principal amount.
    pub amount: Money,
    /// Ledger transfers made for it, the hold first (then postings, fees).
    pub transfers: Vec<TransferId>,
    /// Checks made since the status last changed: submissions or status queries; the back-off
    /// of the next one grows with it.
    #[serde(default)]
    pub checks: u32,
    /// When the worker is next due to act on it (send it, or ask the party for its status);
    /// absent once the money is decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<Timestamp>,
    /// Since when it has been undecided for longer than the bound operators are warned after;
    /// it stays held and is never released by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_since: Option<Timestamp>,
    /// The party's reason code of a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    /// Service-specific fields (counterparty IBAN, FX quote, loan schedule, …) without schema
    /// migrations.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The stored version: 1 when first written, one more at every write after. A transition is
    /// applied only to the version it was computed from (optimistic concurrency); records not
    /// yet written have 0.
    #[serde(default)]
    pub version: u64,
    /// When it was requested.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}
