//! The payment rail: the clearing house (or correspondent) that carries interbank payments,
//! as a trait its adapters implement, and the clearing account each rail books against.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallError, CallKey, ExternalAccount, ReasonCode};
use crate::Timestamp;
use crate::account::SystemAccount;
use crate::ids::AccountId;
use crate::money::{Currency, Money};

/// A rail the bank is connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RailId {
    /// SEPA credit transfers (EPC SCT rulebook): ISO 20022 pacs.008.001.08 out, pacs.002.001.10
    /// status reports back, euro only.
    SepaCreditTransfer,
    /// Cross-border credit transfers through the bank's correspondent (ISO 20022 pacs.008 over
    /// the correspondent's network), in the payee's currency: the last leg of an international
    /// payment ([`crate::external::fx`]). Booked against the international clearing account of
    /// each currency.
    Correspondent,
}

impl RailId {
    /// Every rail.
    pub const ALL: [RailId; 2] = [RailId::SepaCreditTransfer, RailId::Correspondent];

    /// The rail's name in records and configuration.
    pub fn name(self) -> &'static str {
        match self {
            RailId::SepaCreditTransfer => "sepa_credit_transfer",
            RailId::Correspondent => "correspondent",
        }
    }

    /// Whether the rail carries payments in `currency`: SEPA euro only, the correspondent any.
    pub fn carries(self, currency: Currency) -> bool {
        match self {
            RailId::SepaCreditTransfer => currency == Currency::EUR,
            RailId::Correspondent => true,
        }
    }

    /// The system account that the rail's payments in `currency` are booked against: an
    /// outgoing payment's hold posts to it, an incoming payment is credited from it; its balance
    /// is what the bank owes to, or is owed by, the rail until settlement. One per rail kind and
    /// currency, with a fixed id ([`SystemAccount::id`]), so the ledger stays closed.
    pub fn clearing_account(self, currency: Currency) -> AccountId {
        self.clearing_system_account().id(currency)
    }

    /// Which system account kind [`RailId::clearing_account`] is.
    pub fn clearing_system_account(self) -> SystemAccount {
        match self {
            RailId::SepaCreditTransfer => SystemAccount::InterbankClearing,
            RailId::Correspondent => SystemAccount::InternationalClearing,
        }
    }

    /// The transfer kind of the rail's postings.
    pub fn transfer_kind(self) -> crate::transfer::TransferKind {
        match self {
            RailId::SepaCreditTransfer => crate::transfer::TransferKind::Interbank,
            RailId::Correspondent => crate::transfer::TransferKind::International,
        }
    }
}

/// The clearing accounts a store opens (at zero) when it starts, so that operators see the
/// domestic rail's position from the first day: SEPA's, in euro. Every other clearing account
/// (the correspondent's, one per currency) is opened by the ledger on first use.
pub fn clearing_accounts() -> Vec<(SystemAccount, Currency)> {
    vec![(RailId::SepaCreditTransfer.clearing_system_account(), Currency::EUR)]
}

/// What the rail is asked to carry: one credit transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RailOrder {
    /// The amount, in the rail's currency.
    pub amount: Money,
    /// Our customer: their IBAN (of this bank), name and our BIC.
    pub debtor: ExternalAccount,
    /// The payee.
    pub creditor: ExternalAccount,
    /// Unstructured remittance information (at most 140 characters).
    pub remittance: Option<String>,
    /// When the customer asked for it.
    pub requested_at: Timestamp,
}

/// The rail's view of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RailAnswer {
    /// Received, not yet decided (`PDNG`, `ACTC`).
    Pending,
    /// Accepted for settlement (`ACCP`, `ACSP`, `ACWC`): it will settle; the hold posts.
    Accepted,
    /// Settled (`ACSC`, `ACCC`).
    Settled,
    /// Rejected (`RJCT`): it will never settle; the hold is released.
    Rejected {
        /// The rail's reason code.
        reason: Option<ReasonCode>,
    },
}

/// What a status query learnt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum RailStatus {
    /// The rail knows the order.
    Known {
        /// Its view of it.
        answer: RailAnswer,
    },
    /// The rail has no order with this key: it never received it, so it may be sent again
    /// with the same key.
    NotFound,
}

/// The rail as an outside party. Adapters (HTTP with ISO 20022 bodies, the development
/// simulator, test doubles) implement it; the reconciler and the worker call it. Both calls
/// carry our key: `submit` with the same key twice must not make two payments, and answers
/// the first attempt's answer.
#[async_trait]
pub trait PaymentRail: Send + Sync + std::fmt::Debug {
    /// Which rail this is.
    fn id(&self) -> RailId;

    /// Sends `order` under `key`.
    async fn submit(&self, order: &RailOrder, key: &CallKey) -> Result<RailAnswer, CallError>;

    /// Asks what became of the order sent under `key`.
    async fn status(&self, key: &CallKey) -> Result<RailStatus, CallError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rail_books_against_a_fixed_clearing_account() {
        let sct = RailId::SepaCreditTransfer;
        assert_eq!(sct.clearing_account(Currency::EUR), SystemAccount::InterbankClearing.id(Currency::EUR));
        assert_eq!(
            SystemAccount::from_id(sct.clearing_account(Currency::EUR)),
            Some((SystemAccount::InterbankClearing, Currency::EUR))
        );
        assert_eq!(clearing_accounts(), vec![(SystemAccount::InterbankClearing, Currency::EUR)]);
        assert_eq!(serde_json::to_value(sct).expect("json"), sct.name());
        let corr = RailId::Correspondent;
        assert!(corr.carries(Currency::USD) && !sct.carries(Currency::USD));
        assert_eq!(corr.clearing_account(Currency::USD), SystemAccount::InternationalClearing.id(Currency::USD));
        assert_eq!(serde_json::to_value(corr).expect("json"), corr.name());
    }
}
