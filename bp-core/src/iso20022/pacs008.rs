//! pacs.008.001.08, the FI-to-FI customer credit transfer: [`build`] writes the one we send
//! for an order (one transaction per message, settled through the clearing system), [`parse`]
//! reads one we receive. EPC's SEPA Credit Transfer rulebooks use this version since 2019.

use serde::{Deserialize, Serialize};

use super::{Amount, Iso20022Error, invalid, read, write};
use crate::Timestamp;
use crate::external::incoming::IncomingCredit;
use crate::external::{Bic, CallKey, RailOrder};
use crate::iban::Iban;
use crate::money::Money;

/// The message's namespace.
pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08";

/// What an unknown identifier is written as (EPC usage).
const NOT_PROVIDED: &str = "NOTPROVIDED";

/// Longest name read from a message we receive, in characters (`Max140Text`).
const NAME_CHARS_MAX: usize = 140;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "Document")]
struct Document {
    #[serde(rename = "@xmlns", default)]
    xmlns: String,
    #[serde(rename = "FIToFICstmrCdtTrf")]
    message: Message,
}

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    #[serde(rename = "GrpHdr")]
    header: GroupHeader,
    #[serde(rename = "CdtTrfTxInf", default)]
    transactions: Vec<Transaction>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupHeader {
    #[serde(rename = "MsgId")]
    message_id: String,
    #[serde(rename = "CreDtTm")]
    created_at: String,
    #[serde(rename = "NbOfTxs")]
    count: String,
    #[serde(rename = "TtlIntrBkSttlmAmt", skip_serializing_if = "Option::is_none")]
    total: Option<Amount>,
    #[serde(rename = "IntrBkSttlmDt", skip_serializing_if = "Option::is_none")]
    settlement_date: Option<String>,
    #[serde(rename = "SttlmInf")]
    settlement: Settlement,
}

#[derive(Debug, Serialize, Deserialize)]
struct Settlement {
    #[serde(rename = "SttlmMtd")]
    method: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Transaction {
    #[serde(rename = "PmtId")]
    id: PaymentId,
    #[serde(rename = "PmtTpInf", skip_serializing_if = "Option::is_none")]
    payment_type: Option<PaymentType>,
    #[serde(rename = "IntrBkSttlmAmt")]
    amount: Amount,
    #[serde(rename = "ChrgBr", skip_serializing_if = "Option::is_none")]
    charges: Option<String>,
    #[serde(rename = "Dbtr")]
    debtor: Party,
    #[serde(rename = "DbtrAcct", skip_serializing_if = "Option::is_none")]
    debtor_account: Option<CashAccount>,
    #[serde(rename = "DbtrAgt")]
    debtor_agent: Agent,
    #[serde(rename = "CdtrAgt")]
    creditor_agent: Agent,
    #[serde(rename = "Cdtr")]
    creditor: Party,
    #[serde(rename = "CdtrAcct", skip_serializing_if = "Option::is_none")]
    creditor_account: Option<CashAccount>,
    #[serde(rename = "RmtInf", skip_serializing_if = "Option::is_none")]
    remittance: Option<Remittance>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PaymentId {
    #[serde(rename = "InstrId", skip_serializing_if = "Option::is_none")]
    instruction: Option<String>,
    #[serde(rename = "EndToEndId")]
    end_to_end: String,
    #[serde(rename = "TxId", skip_serializing_if = "Option::is_none")]
    transaction: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PaymentType {
    #[serde(rename = "SvcLvl")]
    service_level: Code,
}

#[derive(Debug, Serialize, Deserialize)]
struct Code {
    #[serde(rename = "Cd")]
    code: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Party {
    #[serde(rename = "Nm", skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CashAccount {
    #[serde(rename = "Id")]
    id: AccountIdentification,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountIdentification {
    #[serde(rename = "IBAN")]
    iban: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Agent {
    #[serde(rename = "FinInstnId")]
    institution: Institution,
}

#[derive(Debug, Serialize, Deserialize)]
struct Institution {
    #[serde(rename = "BICFI", skip_serializing_if = "Option::is_none")]
    bic: Option<String>,
    #[serde(rename = "Othr", skip_serializing_if = "Option::is_none")]
    other: Option<OtherId>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OtherId {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Remittance {
    #[serde(rename = "Ustrd", skip_serializing_if = "Option::is_none")]
    unstructured: Option<String>,
}

impl Agent {
    fn of(bic: Option<&Bic>) -> Self {
        let institution = match bic {
            Some(b) => Institution { bic: Some(b.as_str().to_owned()), other: None },
            None => Institution { bic: None, other: Some(OtherId { id: NOT_PROVIDED.to_owned() }) },
        };
        Self { institution }
    }

    fn bic(&self) -> Result<Option<Bic>, Iso20022Error> {
        self.institution.bic.as_deref().map(Bic::parse).transpose().map_err(|e| invalid("BICFI", e))
    }
}

/// The pacs.008 that sends `order` under `key`, made at `created_at`. The key is the message
/// id, the end-to-end id and the transaction id alike (one transaction per message, so a
/// resent message is recognisably the same one). Our BIC, the debtor agent's, is the
/// order's debtor's.
pub fn build(order: &RailOrder, key: &CallKey, created_at: Timestamp) -> Result<String, Iso20022Error> {
    let our_bic = order.debtor.bic.as_ref().ok_or_else(|| invalid("DbtrAgt", "our BIC is needed"))?;
    let amount = Amount::of(order.amount);
    let transaction = Transaction {
        id: PaymentId {
            instruction: Some(key.as_str().to_owned()),
            end_to_end: key.as_str().to_owned(),
            transaction: Some(key.as_str().to_owned()),
        },
        // Service level SEPA for euro (the SEPA rail's); none for another currency, which goes
        // through the correspondent and is no SEPA payment.
        payment_type: (order.amount.currency() == crate::money::Currency::EUR)
            .then(|| PaymentType { service_level: Code { code: "SEPA".to_owned() } }),
        amount: amount.clone(),
        charges: Some("SLEV".to_owned()),
        debtor: Party { name: Some(order.debtor.name.as_str().to_owned()) },
        debtor_account: Some(CashAccount { id: AccountIdentification { iban: order.debtor.iban.as_str().to_owned() } }),
        debtor_agent: Agent::of(Some(our_bic)),
        creditor_agent: Agent::of(order.creditor.bic.as_ref()),
        creditor: Party { name: Some(order.creditor.name.as_str().to_owned()) },
        creditor_account: Some(CashAccount {
            id: AccountIdentification { iban: order.creditor.iban.as_str().to_owned() },
        }),
        remittance: order.remittance.as_ref().map(|r| Remittance { unstructured: Some(r.clone()) }),
    };
    let header = GroupHeader {
        message_id: key.as_str().to_owned(),
        created_at: created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        count: "1".to_owned(),
        total: Some(amount),
        settlement_date: Some(created_at.format("%Y-%m-%d").to_string()),
        settlement: Settlement { method: "CLRG".to_owned() },
    };
    let document =
        Document { xmlns: NAMESPACE.to_owned(), message: Message { header, transactions: vec![transaction] } };
    write(&document)
}

/// A pacs.008 as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditTransfer {
    /// The message id.
    pub message_id: String,
    /// Its transactions.
    pub transactions: Vec<CreditTransferTx>,
}

/// One transaction of a pacs.008.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditTransferTx {
    /// The end-to-end id.
    pub end_to_end_id: String,
    /// The instructing bank's transaction id.
    pub tx_id: Option<String>,
    /// The interbank settlement amount.
    pub amount: Money,
    /// The payer's name (at most 140 characters).
    pub debtor_name: Option<String>,
    /// The payer's IBAN.
    pub debtor_iban: Option<Iban>,
    /// The payer's bank.
    pub debtor_agent: Option<Bic>,
    /// The payee's name (at most 140 characters).
    pub creditor_name: Option<String>,
    /// The payee's IBAN.
    pub creditor_iban: Iban,
    /// The payee's bank.
    pub creditor_agent: Option<Bic>,
    /// Unstructured remittance information.
    pub remittance: Option<String>,
}

impl CreditTransferTx {
    /// This transaction as an incoming credit ([`crate::external::incoming`]).
    pub fn incoming(&self) -> IncomingCredit {
        IncomingCredit {
            end_to_end_id: self.end_to_end_id.clone(),
            tx_id: self.tx_id.clone(),
            debtor_agent: self.debtor_agent.clone(),
            amount: self.amount,
            creditor_iban: self.creditor_iban.clone(),
            debtor_name: self.debtor_name.clone(),
            remittance: self.remittance.clone(),
        }
    }
}

fn name(party: &Party, field: &'static str) -> Result<Option<String>, Iso20022Error> {
    match &party.name {
        Some(n) if n.chars().count() > NAME_CHARS_MAX || n.chars().any(char::is_control) => {
            Err(invalid(field, "at most 140 characters, without control characters"))
        }
        Some(n) => Ok(Some(n.trim().to_owned())),
        None => Ok(None),
    }
}

fn id35(value: &str, field: &'static str) -> Result<String, Iso20022Error> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 35 {
        return Err(invalid(field, "1 to 35 characters"));
    }
    Ok(value.to_owned())
}

fn transaction(tx: &Transaction) -> Result<CreditTransferTx, Iso20022Error> {
    let iban = |a: &Option<CashAccount>, field| {
        a.as_ref().map(|a| Iban::parse(&a.id.iban).map_err(|e| invalid(field, e))).transpose()
    };
    Ok(CreditTransferTx {
        end_to_end_id: id35(&tx.id.end_to_end, "EndToEndId")?,
        tx_id: tx.id.transaction.as_deref().map(|t| id35(t, "TxId")).transpose()?,
        amount: tx.amount.money("IntrBkSttlmAmt")?,
        debtor_name: name(&tx.debtor, "Dbtr/Nm")?,
        debtor_iban: iban(&tx.debtor_account, "DbtrAcct")?,
        debtor_agent: tx.debtor_agent.bic()?,
        creditor_name: name(&tx.creditor, "Cdtr/Nm")?,
        creditor_iban: iban(&tx.creditor_account, "CdtrAcct")?.ok_or_else(|| invalid("CdtrAcct", "missing"))?,
        creditor_agent: tx.creditor_agent.bic()?,
        remittance: tx.remittance.as_ref().and_then(|r| r.unstructured.clone()),
    })
}

/// Reads a pacs.008.001.08.
pub fn parse(xml: &str) -> Result<CreditTransfer, Iso20022Error> {
    let document: Document = read(xml)?;
    if document.xmlns != NAMESPACE {
        return Err(Iso20022Error::Namespace(document.xmlns));
    }
    let message = document.message;
    if message.transactions.is_empty() {
        return Err(invalid("CdtTrfTxInf", "no transaction"));
    }
    if message.header.count.trim() != message.transactions.len().to_string() {
        return Err(invalid("NbOfTxs", "does not count the transactions"));
    }
    let transactions = message.transactions.iter().map(transaction).collect::<Result<_, _>>()?;
    Ok(CreditTransfer { message_id: id35(&message.header.message_id, "MsgId")?, transactions })
}
