//! Service records: the envelope of interbank transfers, international transfers and loans (FR3,
//! FR6). The type is here so that the API, the SDK and the external-services work share it; no
//! store keeps service records yet (the external-services work adds that).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
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

/// Where a service request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Received, not yet sent to the external entity.
    Requested,
    /// Sent; waiting for the external entity's answer.
    InProgress,
    /// Done.
    Completed,
    /// Rejected by the external entity or the bank.
    Rejected,
    /// Cancelled by the customer.
    Cancelled,
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
    /// Ledger transfers made for it (holds, postings, fees).
    pub transfers: Vec<TransferId>,
    /// Service-specific fields (counterparty IBAN, FX quote, loan schedule, …) without schema
    /// migrations.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// When it was requested.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}
