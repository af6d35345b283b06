//! pacs.002.001.10, the FI-to-FI payment status report: [`parse`] reads one, and
//! [`StatusReport::answer_for`] says what it reports about the order sent under a key.

use serde::Deserialize;

use super::{Iso20022Error, invalid, read};
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
