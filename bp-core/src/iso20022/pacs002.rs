//! pacs.002.001.10, the FI-to-FI payment status report: [`parse`] reads one, and
//! [`StatusReport::answer_for`] says what it reports about the order sent under a key;
//! [`build`] writes one (the rail's side: the simulator of the outside parties, and a bank
//! answering an incoming pacs.008).

use serde::{Deserialize, Serialize};

use super::{Iso20022Error, invalid, read, write};
use crate::Timestamp;
use crate::external::{CallKey, RailAnswer, ReasonCode};

/// The message's namespace.
pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10";

#[derive(Debug, Deserialize)]
struct Document {
    #[serde(rename = "@xmlns", default)]
    xmlns: String,
    #[serde(rename = "FIToFIPmtStsRpt")]
    report: Report,
}

#[derive(Debug, Deserialize)]
struct Report {
    #[serde(rename = "GrpHdr")]
    header: Header,
    #[serde(rename = "OrgnlGrpInfAndSts", default)]
    groups: Vec<Group>,
    #[serde(rename = "TxInfAndSts", default)]
    transactions: Vec<Tx>,
}

#[derive(Debug, Deserialize)]
struct Header {
    #[serde(rename = "MsgId")]
    message_id: String,
}

#[derive(Debug, Deserialize)]
struct Group {
    #[serde(rename = "OrgnlMsgId")]
    original_message_id: String,
    #[serde(rename = "GrpSts")]
    status: Option<String>,
    #[serde(rename = "StsRsnInf", default)]
    reasons: Vec<ReasonInfo>,
}

#[derive(Debug, Deserialize)]
struct Tx {
    #[serde(rename = "OrgnlEndToEndId")]
    end_to_end_id: Option<String>,
    #[serde(rename = "OrgnlTxId")]
    tx_id: Option<String>,
    #[serde(rename = "TxSts")]
    status: Option<String>,
    #[serde(rename = "StsRsnInf", default)]
    reasons: Vec<ReasonInfo>,
}

#[derive(Debug, Deserialize)]
struct ReasonInfo {
    #[serde(rename = "Rsn")]
    reason: Option<Reason>,
}

#[derive(Debug, Deserialize)]
struct Reason {
    #[serde(rename = "Cd")]
    code: Option<String>,
}

/// A status of the report (`ExternalPaymentTransactionStatus1Code` / group status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `ACTC`: technically valid; business checks pending.
    AcceptedTechnical,
    /// `ACCP`: accepted (customer profile).
    Accepted,
    /// `ACSP`: accepted, settlement in process.
    AcceptedSettlementInProcess,
    /// `ACWC`: accepted with change.
    AcceptedWithChange,
    /// `ACSC`: accepted, settlement completed.
    Settled,
    /// `ACCC`: accepted, credited to the creditor.
    CreditorCredited,
    /// `PDNG`: pending.
    Pending,
    /// `RJCT`: rejected.
    Rejected,
}

impl Status {
    fn parse(code: &str) -> Result<Self, Iso20022Error> {
        Ok(match code.trim() {
            "ACTC" => Status::AcceptedTechnical,
            "ACCP" => Status::Accepted,
            "ACSP" => Status::AcceptedSettlementInProcess,
            "ACWC" => Status::AcceptedWithChange,
            "ACSC" => Status::Settled,
            "ACCC" => Status::CreditorCredited,
            "PDNG" => Status::Pending,
            "RJCT" => Status::Rejected,
            other => return Err(invalid("status", format!("unknown status code {other:?}"))),
        })
    }

    /// Its code in a message (`ACSC`, `RJCT`, …).
    pub fn code(self) -> &'static str {
        match self {
            Status::AcceptedTechnical => "ACTC",
            Status::Accepted => "ACCP",
            Status::AcceptedSettlementInProcess => "ACSP",
            Status::AcceptedWithChange => "ACWC",
            Status::Settled => "ACSC",
            Status::CreditorCredited => "ACCC",
            Status::Pending => "PDNG",
            Status::Rejected => "RJCT",
        }
    }

    /// What it means for the order.
    pub fn answer(self, reason: Option<ReasonCode>) -> RailAnswer {
        match self {
            Status::AcceptedTechnical | Status::Pending => RailAnswer::Pending,
            Status::Accepted | Status::AcceptedSettlementInProcess | Status::AcceptedWithChange => RailAnswer::Accepted,
            Status::Settled | Status::CreditorCredited => RailAnswer::Settled,
            Status::Rejected => RailAnswer::Rejected { reason },
        }
    }
}

/// A status with its first reason code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    /// The status.
    pub status: Status,
    /// The first reason code given.
    pub reason: Option<ReasonCode>,
}

/// One transaction's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionStatus {
    /// The original end-to-end id.
    pub end_to_end_id: Option<String>,
    /// The original transaction id.
    pub tx_id: Option<String>,
    /// Its status, when reported.
    pub status: Option<Reported>,
}

/// A pacs.002 as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The report's message id.
    pub message_id: String,
    /// The original message's id.
    pub original_message_id: Option<String>,
    /// The status of the whole original message, when reported.
    pub group_status: Option<Reported>,
    /// The transactions' statuses.
    pub transactions: Vec<TransactionStatus>,
}

impl StatusReport {
    /// What the report says about the order sent under `key` (our message, end-to-end and
    /// transaction id): its transaction's status, or else the group status of our message
    /// (it applies to every transaction of it); `None` when it says nothing about it.
    pub fn answer_for(&self, key: &CallKey) -> Option<RailAnswer> {
        let ours = |id: &Option<String>| id.as_deref() == Some(key.as_str());
        let tx = self.transactions.iter().find(|t| ours(&t.end_to_end_id) || ours(&t.tx_id));
        let reported = match tx.and_then(|t| t.status.as_ref()) {
            Some(r) => r,
            None if ours(&self.original_message_id) => self.group_status.as_ref()?,
            None => return None,
        };
        Some(reported.status.answer(reported.reason.clone()))
    }
}

fn reported(status: Option<&str>, reasons: &[ReasonInfo]) -> Result<Option<Reported>, Iso20022Error> {
    let Some(status) = status else { return Ok(None) };
    let reason = reasons.iter().find_map(|r| r.reason.as_ref().and_then(|r| r.code.as_deref()));
    let reason = reason.map(|c| ReasonCode::parse(c.trim()).map_err(|e| invalid("StsRsnInf/Rsn/Cd", e))).transpose()?;
    Ok(Some(Reported { status: Status::parse(status)?, reason }))
}

/// Reads a pacs.002.001.10.
pub fn parse(xml: &str) -> Result<StatusReport, Iso20022Error> {
    let document: Document = read(xml)?;
    if document.xmlns != NAMESPACE {
        return Err(Iso20022Error::Namespace(document.xmlns));
    }
    let report = document.report;
    if report.groups.len() > 1 {
        return Err(invalid("OrgnlGrpInfAndSts", "more than one"));
    }
    let group = report.groups.first();
    let group_status = match group {
        Some(g) => reported(g.status.as_deref(), &g.reasons)?,
        None => None,
    };
    let transactions = report
        .transactions
        .iter()
        .map(|t| {
            Ok(TransactionStatus {
                end_to_end_id: t.end_to_end_id.clone(),
                tx_id: t.tx_id.clone(),
                status: reported(t.status.as_deref(), &t.reasons)?,
            })
        })
        .collect::<Result<_, Iso20022Error>>()?;
    if group_status.is_none() && report.transactions.is_empty() {
        return Err(invalid("FIToFIPmtStsRpt", "reports no status"));
    }
    Ok(StatusReport {
        message_id: report.header.message_id,
        original_message_id: group.map(|g| g.original_message_id.clone()),
        group_status,
        transactions,
    })
}

/// The name of the message a report answers (`OrgnlMsgNmId`): the credit transfers we send.
const ORIGINAL_MESSAGE_NAME: &str = "pacs.008.001.08";

/// What a pacs.002 that [`build`] writes reports: the status of one transaction of one
/// original message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewStatusReport {
    /// The report's own message id (1 to 35 characters).
    pub message_id: String,
    /// When the report is made.
    pub created_at: Timestamp,
    /// The original pacs.008's message id.
    pub original_message_id: String,
    /// The original transaction's end-to-end id.
    pub original_end_to_end_id: String,
    /// The original transaction's id, when it had one.
    pub original_tx_id: Option<String>,
    /// The transaction's status, with its reason (a rejection's `AC04`, …).
    pub status: Reported,
}

impl NewStatusReport {
    /// The report of `status` for the order we sent under `key` (which is its message,
    /// end-to-end and transaction id alike, `pacs008::build`).
    pub fn for_key(key: &CallKey, message_id: String, created_at: Timestamp, status: Reported) -> Self {
        Self {
            message_id,
            created_at,
            original_message_id: key.as_str().to_owned(),
            original_end_to_end_id: key.as_str().to_owned(),
            original_tx_id: Some(key.as_str().to_owned()),
            status,
        }
    }
}

#[derive(Serialize)]
#[serde(rename = "Document")]
struct OutDocument<'a> {
    #[serde(rename = "@xmlns")]
    xmlns: &'a str,
    #[serde(rename = "FIToFIPmtStsRpt")]
    report: OutReport<'a>,
}

#[derive(Serialize)]
struct OutReport<'a> {
    #[serde(rename = "GrpHdr")]
    header: OutHeader<'a>,
    #[serde(rename = "OrgnlGrpInfAndSts")]
    group: OutGroup<'a>,
    #[serde(rename = "TxInfAndSts")]
    transaction: OutTx<'a>,
}

#[derive(Serialize)]
struct OutHeader<'a> {
    #[serde(rename = "MsgId")]
    message_id: &'a str,
    #[serde(rename = "CreDtTm")]
    created_at: String,
}

#[derive(Serialize)]
struct OutGroup<'a> {
    #[serde(rename = "OrgnlMsgId")]
    original_message_id: &'a str,
    #[serde(rename = "OrgnlMsgNmId")]
    original_message_name: &'a str,
}

#[derive(Serialize)]
struct OutTx<'a> {
    #[serde(rename = "OrgnlEndToEndId")]
    end_to_end_id: &'a str,
    #[serde(rename = "OrgnlTxId", skip_serializing_if = "Option::is_none")]
    tx_id: Option<&'a str>,
    #[serde(rename = "TxSts")]
    status: &'a str,
    #[serde(rename = "StsRsnInf", skip_serializing_if = "Option::is_none")]
    reason: Option<OutReasonInfo<'a>>,
}

#[derive(Serialize)]
struct OutReasonInfo<'a> {
    #[serde(rename = "Rsn")]
    reason: OutReason<'a>,
}

#[derive(Serialize)]
struct OutReason<'a> {
    #[serde(rename = "Cd")]
    code: &'a str,
}

fn id35<'a>(value: &'a str, field: &'static str) -> Result<&'a str, Iso20022Error> {
    if value.trim().is_empty() || value.chars().count() > 35 {
        return Err(invalid(field, "1 to 35 characters"));
    }
    Ok(value)
}

/// Writes `report` as a pacs.002.001.10 with one transaction status (and the original
/// message's id and name as its group information); [`parse`] reads it back the same.
pub fn build(report: &NewStatusReport) -> Result<String, Iso20022Error> {
    let document = OutDocument {
        xmlns: NAMESPACE,
        report: OutReport {
            header: OutHeader {
                message_id: id35(&report.message_id, "MsgId")?,
                created_at: report.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            },
            group: OutGroup {
                original_message_id: id35(&report.original_message_id, "OrgnlMsgId")?,
                original_message_name: ORIGINAL_MESSAGE_NAME,
            },
            transaction: OutTx {
                end_to_end_id: id35(&report.original_end_to_end_id, "OrgnlEndToEndId")?,
                tx_id: report.original_tx_id.as_deref().map(|t| id35(t, "OrgnlTxId")).transpose()?,
                status: report.status.status.code(),
                reason: report.status.reason.as_ref().map(|r| OutReasonInfo { reason: OutReason { code: r.as_str() } }),
            },
        },
    };
    write(&document)
}
