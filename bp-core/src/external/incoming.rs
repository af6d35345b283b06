//! Payments coming in from a rail to one of this bank's IBANs (an incoming pacs.008): the pure
//! rule that makes one a credit from the rail's clearing account, or refuses it with the ISO
//! reason code to return.

use uuid::Uuid;

use super::ReasonCode;
use super::payee::{BankIbans, Bic};
use super::rail::RailId;
use crate::account::{Account, AccountStatus};
use crate::account_number::AccountNumber;
use crate::iban::Iban;
use crate::ids::TransferId;
use crate::money::Money;
use crate::transfer::{REFERENCE_CHARS_MAX, TransferRequest};

/// Namespace of transfer ids derived from incoming payments.
const INCOMING_NAMESPACE: Uuid = Uuid::from_u128(0x9c3b_7e10_2d4a_4c85_b6f1_07e2_5a93_d1c4);

/// An incoming credit transfer, as read from the rail's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingCredit {
    /// The end-to-end id the payer's side gave it (may be `NOTPROVIDED`).
    pub end_to_end_id: String,
    /// The instructing bank's transaction id (unique for that bank), when given.
    pub tx_id: Option<String>,
    /// The payer's bank, when given.
    pub debtor_agent: Option<Bic>,
    /// The amount settled between the banks.
    pub amount: Money,
    /// Our customer's IBAN.
    pub creditor_iban: Iban,
    /// The payer's name, as given (at most 140 characters).
    pub debtor_name: Option<String>,
    /// Remittance information.
    pub remittance: Option<String>,
}

/// The transfer id of an incoming payment: the same message delivered twice (or ten times)
/// gives the same id, so the ledger credits it once and answers the repeats as replays. The
/// id is derived from the rail, the payer's bank, its transaction id and the end-to-end id:
/// the end-to-end id alone is the payer's choice and need not be unique (`NOTPROVIDED`).
pub fn incoming_transfer_id(rail: RailId, credit: &IncomingCredit) -> TransferId {
    let mut name = Vec::new();
    for part in [
        rail.name(),
        credit.debtor_agent.as_ref().map_or("", Bic::as_str),
        credit.tx_id.as_deref().unwrap_or(""),
        credit.end_to_end_id.as_str(),
    ] {
        // Length-prefixed, so that no two different tuples make the same name.
        name.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    TransferId::from_uuid(Uuid::new_v5(&INCOMING_NAMESPACE, &name))
}

/// Which of this bank's accounts `credit` is for, or why none (`AC01`: not an IBAN of ours).
pub fn incoming_account_number(bank: &BankIbans, credit: &IncomingCredit) -> Result<AccountNumber, ReasonCode> {
    bank.account_number_of(&credit.creditor_iban).ok_or_else(ReasonCode::incorrect_account)
}

/// The credit of `credit` to `account` (the account with its IBAN's number, if one exists):
/// a transfer posted at once from the rail's clearing account, with the id of
/// [`incoming_transfer_id`]; or the reason to return it: no such customer account (`AC01`),
/// closed (`AC04`), frozen (`AC06`), not in the rail's currency (`AM03`).
pub fn credit_incoming(
    rail: RailId,
    credit: &IncomingCredit,
    account: Option<&Account>,
) -> Result<TransferRequest, ReasonCode> {
    let account = account.filter(|a| !a.is_system()).ok_or_else(ReasonCode::incorrect_account)?;
    match account.status {
        AccountStatus::Active => {}
        AccountStatus::Closed => return Err(ReasonCode::closed_account()),
        AccountStatus::Frozen => return Err(ReasonCode::blocked_account()),
    }
    let currency = credit.amount.currency();
    if !rail.carries(currency) || account.currency != currency {
        return Err(ReasonCode::currency_not_allowed());
    }
    if !credit.amount.is_positive() {
        return Err(ReasonCode::invalid_amount());
    }
    // A reference is one line of at most 140 characters in the ledger.
    let reference = credit
        .remittance
        .as_ref()
        .map(|r| r.chars().map(|c| if c.is_control() { ' ' } else { c }).take(REFERENCE_CHARS_MAX).collect::<String>());
    Ok(TransferRequest {
        id: incoming_transfer_id(rail, credit),
        kind: rail.transfer_kind(),
        debit_account: rail.clearing_account(currency),
        credit_account: account.id,
        amount: credit.amount,
        reference: reference.filter(|r| !r.trim().is_empty()),
        hold_until: None,
    })
}
