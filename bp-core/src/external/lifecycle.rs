//! The life of an external payment as a pure state machine over its [`ServiceRecord`]:
//! [`request`] makes the record and the hold, [`transition`] applies one input (the worker's
//! turn, an answer, a failed call, a status report, a webhook) and says what the adapter must
//! write atomically with the new record ([`Effect`]s). Reports may come in any order and any
//! number of times: a repeated one changes nothing, a stale one is ignored, and one that
//! contradicts a decided outcome is a [`TransitionError::Conflict`] to surface, never applied.
//!
//! ```text
//!              due: Submit                    answer/report Accepted ─▶ accepted ──▶ settled
//!  requested ─────────────▶ submitted ──┬──▶ answer/report Settled ───────────────▶ settled
//!     ▲  ▲                   │  ▲       └──▶ Rejected, or the submit Refused ─────▶ rejected
//!     │  └── submit NotSent ─┘  │ Pending
//!     │                         │
//!     └── status NotFound ── unknown ◀── submit outcome Unknown
//!                             (due: QueryStatus, with back-off, until the rail answers)
//! ```
//! `docs/external-services.md` has the full table.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::rail::{RailAnswer, RailId, RailStatus};
use super::{BackOff, CallError, CallKey, ExternalAccount};
use crate::Timestamp;
use crate::event::EventBody;
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::money::Money;
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use crate::transfer::{REFERENCE_CHARS_MAX, TransferRequest};

/// Namespace of service record ids derived from their hold's transfer id.
const RECORD_NAMESPACE: Uuid = Uuid::from_u128(0x5e7a_41c2_0b9d_4f63_8e15_c2a7_d904_36fb);

/// The bounds of an external payment's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Delays between checks (submissions and status queries).
    pub back_off: BackOff,
    /// Undecided this long after it was requested, a payment is flagged stuck for operators
    /// (seconds). It keeps its hold and its checks; nothing releases it by itself (the hold has
    /// no deadline: see [`Effect::PlaceHold`]).
    pub stuck_after_s: u64,
}

impl Default for Policy {
    /// Back-off from 1 s to 10 min; stuck after 1 hour.
    fn default() -> Self {
        Self { back_off: BackOff::default(), stuck_after_s: 3_600 }
    }
}

fn seconds(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1_000_000))
}

fn millis(ms: u64) -> TimeDelta {
    TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000))
}

/// What happened to a payment, as the worker, the reconciler and the webhook receiver learn it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The worker's turn: a new record, or its `next_check_at` has come. A requested payment
    /// is submitted (this is the "submitted" step: recorded before the call goes out, so a
    /// crash during the call leaves a record the reconciler asks about); a submitted or unknown
    /// one is asked about. Before `next_check_at` it changes nothing.
    Due,
    /// The rail's answer to our submission.
    Answered(RailAnswer),
    /// Our submission failed.
    SubmitFailed(CallError),
    /// The answer to our status query.
    StatusReport(RailStatus),
    /// Our status query failed: nothing changes (the next one is already scheduled).
    StatusFailed(CallError),
    /// The rail told us by itself (an authenticated webhook, or a pacs.002 it pushed).
    Webhook(RailAnswer),
}

/// What the adapter must do, in the same atomic write as the new record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Place the hold: a pending transfer from the customer's account to the rail's clearing
    /// account. Its request has no `hold_until`, and here that does not mean "post at once":
    /// the hold has no deadline, it lasts until the outside party answers
    /// ([`crate::transfer::Transfer::awaits_external_party`]), so no sweeper can release money
    /// that may already be on its way.
    PlaceHold(TransferRequest),
    /// Post the hold: the money leaves for the rail.
    PostHold(TransferId),
    /// Release the hold (`VoidReason::Rejected`): the money stays.
    VoidHold(TransferId),
    /// Post a new transfer at once (a loan's disbursement, an instalment, a repayment); its id
    /// is appended to the record's transfers.
    Post(TransferRequest),
    /// Open a loan's receivable account under this id, in the loan's currency
    /// ([`crate::account::SystemAccount::LoanReceivable`]), before the postings that use it.
    OpenReceivable(AccountId),
    /// After the write, send the order under this key (the first time, or again with the same
    /// key: the rail never received it).
    Submit(CallKey),
    /// After the write, ask the rail about the order sent under this key.
    QueryStatus(CallKey),
    /// After the write, send a loan's application to the loan provider under this key (the
    /// first time, or again with the same key: the provider never received it).
    Decide(CallKey),
    /// After the write, ask the loan provider for its decision on the application sent under
    /// this key.
    QueryDecision(CallKey),
    /// Append this event to the record's account.
    Emit(EventBody),
}

/// A record after an input, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The record to write.
    pub record: ServiceRecord,
    /// What to do with it, in order.
    pub effects: Vec<Effect>,
}

/// An input that cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The report contradicts what is decided (a late "accepted" after "rejected", a rail
    /// that no longer knows an order it accepted): nothing is applied; an operator must look.
    #[error("a {reported} report conflicts with a {status:?} payment")]
    Conflict {
        /// The record's status.
        status: ServiceStatus,
        /// What was reported.
        reported: &'static str,
    },
    /// The record is not an external payment with a hold.
    #[error("not an external payment: {0}")]
    NotExternalPayment(&'static str),
}

/// A new external payment, as the payments façade hands it over once SCA allows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewExternalPayment {
    /// The payer.
    pub customer: CustomerId,
    /// The payer's account.
    pub account: AccountId,
    /// The hold's transfer id (derived from the customer's idempotency key).
    pub hold: TransferId,
    /// The amount, in the rail's currency.
    pub amount: Money,
    /// The payee.
    pub creditor: ExternalAccount,
    /// Remittance information (at most 140 characters).
    pub remittance: Option<String>,
    /// The rail that carries it.
    pub rail: RailId,
}

/// A new external payment that cannot be requested.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The rail does not carry the amount's currency.
    #[error("the {rail} rail does not carry {currency}", rail = rail.name())]
    Currency {
        /// The rail.
        rail: RailId,
        /// The amount's currency.
        currency: crate::money::Currency,
    },
    /// The amount is not positive.
    #[error("the amount must be positive")]
    Amount,
    /// The remittance information is too long or has a control character.
    #[error("remittance information is at most {REFERENCE_CHARS_MAX} characters, without control characters")]
    Remittance,
}

/// What an interbank payment's record keeps in its `details`, beyond the envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterbankDetails {
    /// The rail.
    pub rail: RailId,
    /// The payee.
    pub creditor: ExternalAccount,
    /// Remittance information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remittance: Option<String>,
    /// Our key with the rail (also the end-to-end id of the pacs.008).
    pub key: CallKey,
}

impl InterbankDetails {
    /// The details of `record`, if it is an interbank payment's.
    pub fn of(record: &ServiceRecord) -> Option<Self> {
        serde_json::from_value(serde_json::Value::Object(record.details.clone())).ok()
    }
}

/// The id of the service record of the payment held by `hold`: found again from the transfer.
pub fn record_id(hold: TransferId) -> ServiceRecordId {
    ServiceRecordId::from_uuid(Uuid::new_v5(&RECORD_NAMESPACE, hold.as_uuid().as_bytes()))
}

/// The record of a new external payment (`requested`, due at once) and its effects: place the
/// hold (without a deadline), emit `service.updated`. The store writes the hold and the record
/// (the intent to submit) in one atomic write (`ServiceStore::request`); the worker then
/// submits it.
pub fn request(p: &NewExternalPayment, now: Timestamp) -> Result<Transition, RequestError> {
    if !p.rail.carries(p.amount.currency()) {
        return Err(RequestError::Currency { rail: p.rail, currency: p.amount.currency() });
    }
    if !p.amount.is_positive() {
        return Err(RequestError::Amount);
    }
    if let Some(r) = &p.remittance
        && (r.chars().count() > REFERENCE_CHARS_MAX || r.chars().any(char::is_control))
    {
        return Err(RequestError::Remittance);
    }
    let key = CallKey::of_transfer(p.hold);
    let details =
        InterbankDetails { rail: p.rail, creditor: p.creditor.clone(), remittance: p.remittance.clone(), key };
    let details = match serde_json::to_value(details) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => unreachable!("a struct serialises to a JSON object"),
    };
    let record = ServiceRecord {
        id: record_id(p.hold),
        customer_id: p.customer,
        kind: ServiceKind::InterbankTransfer,
        status: ServiceStatus::Requested,
        account_id: p.account,
        amount: p.amount,
        transfers: vec![p.hold],
        checks: 0,
        next_check_at: Some(now),
        stuck_since: None,
        reason: None,
        details,
        version: 0,
        created_at: now,
        updated_at: now,
    };
    let hold = TransferRequest {
        id: p.hold,
        kind: p.rail.transfer_kind(),
        debit_account: p.account,
        credit_account: p.rail.clearing_account(p.amount.currency()),
        amount: p.amount,
        reference: p.remittance.clone(),
        hold_until: None,
    };
    let effects = vec![Effect::PlaceHold(hold), Effect::Emit(event(&record))];
    Ok(Transition { record, effects })
}

/// The `service.updated` event of `record` as it is now.
pub fn event(record: &ServiceRecord) -> EventBody {
    EventBody::ServiceUpdated {
        service_id: record.id,
        kind: record.kind,
        status: record.status,
        amount: record.amount,
        hold: record.transfers.first().copied(),
        stuck_since: record.stuck_since,
    }
}

/// Applies `input` to `record` at `now`; `random` is a value of the injected generator, for
/// the jitter of the next check. See the module documentation and `docs/external-services.md`.
pub fn transition(
    record: &ServiceRecord,
    input: &Input,
    now: Timestamp,
    policy: &Policy,
    random: u64,
) -> Result<Transition, TransitionError> {
    if !matches!(record.kind, ServiceKind::InterbankTransfer | ServiceKind::InternationalTransfer) {
        return Err(TransitionError::NotExternalPayment("not a payment to another bank"));
    }
    let hold = *record.transfers.first().ok_or(TransitionError::NotExternalPayment("no hold"))?;
    let mut step = Step { record: record.clone(), effects: Vec::new(), hold, now, policy, random };
    match input {
        Input::Due => step.due(),
        Input::Answered(answer) | Input::Webhook(answer) | Input::StatusReport(RailStatus::Known { answer }) => {
            step.report(answer)?;
        }
        Input::StatusReport(RailStatus::NotFound) => step.not_found()?,
        Input::SubmitFailed(error) => step.submit_failed(error)?,
        // The next query was scheduled when this one went out.
        Input::StatusFailed(_) => {}
    }
    Ok(step.finish(record))
}

fn not_a_payment() -> TransitionError {
    TransitionError::NotExternalPayment("in a loan's status")
}

/// One transition in the making.
struct Step<'a> {
    record: ServiceRecord,
    effects: Vec<Effect>,
    hold: TransferId,
    now: Timestamp,
    policy: &'a Policy,
    random: u64,
}

impl Step<'_> {
    fn key(&self) -> CallKey {
        CallKey::of_transfer(self.hold)
    }

    /// Schedules the next check with the back-off of the checks made so far.
    fn schedule(&mut self) {
        let delay = self.policy.back_off.delay_ms(self.record.checks, self.random);
        self.record.next_check_at = Some(self.now + millis(delay));
    }

    fn conflict(&self, reported: &'static str) -> TransitionError {
        TransitionError::Conflict { status: self.record.status, reported }
    }

    fn due(&mut self) {
        if self.record.status.money_decided() || self.record.next_check_at.is_some_and(|at| at > self.now) {
            return;
        }
        let call = match self.record.status {
            ServiceStatus::Requested => {
                self.record.status = ServiceStatus::Submitted;
                Effect::Submit(self.key())
            }
            _ => Effect::QueryStatus(self.key()),
        };
        self.schedule();
        self.record.checks = self.record.checks.saturating_add(1);
        self.effects.push(call);
    }

    /// Moves to a decided status with its money effect: every hold of the payment (an
    /// international payment's linked legs) posted, or every one released.
    fn decide(&mut self, status: ServiceStatus) {
        if !self.record.status.money_decided() {
            let money = |&hold| match status {
                ServiceStatus::Rejected => Effect::VoidHold(hold),
                _ => Effect::PostHold(hold),
            };
            self.effects.extend(self.record.transfers.iter().map(money));
        }
        self.record.status = status;
        self.record.checks = 0;
        self.record.next_check_at = None;
    }

    fn report(&mut self, answer: &RailAnswer) -> Result<(), TransitionError> {
        use ServiceStatus as S;
        match (self.record.status, answer) {
            (S::Requested | S::Unknown, RailAnswer::Pending) => {
                self.record.status = S::Submitted;
                self.schedule();
            }
            (S::Submitted, RailAnswer::Pending) => {}
            (S::Requested | S::Submitted | S::Unknown, RailAnswer::Accepted) => self.decide(S::Accepted),
            (S::Requested | S::Submitted | S::Unknown | S::Accepted, RailAnswer::Settled) => self.decide(S::Settled),
            (S::Requested | S::Submitted | S::Unknown, RailAnswer::Rejected { reason }) => {
                self.decide(S::Rejected);
                self.record.reason = reason.clone();
            }
            // Stale or repeated news of a decided payment.
            (S::Accepted | S::Settled, RailAnswer::Pending | RailAnswer::Accepted)
            | (S::Settled, RailAnswer::Settled)
            | (S::Rejected, RailAnswer::Pending | RailAnswer::Rejected { .. }) => {}
            (S::Accepted | S::Settled, RailAnswer::Rejected { .. }) => return Err(self.conflict("rejected")),
            (S::Rejected, RailAnswer::Accepted) => return Err(self.conflict("accepted")),
            (S::Rejected, RailAnswer::Settled) => return Err(self.conflict("settled")),
            (S::Offered | S::Active | S::InArrears | S::Closed, _) => return Err(not_a_payment()),
        }
        Ok(())
    }

    fn not_found(&mut self) -> Result<(), TransitionError> {
        match self.record.status {
            // Never received: send it again, with the same key, at the next check.
            ServiceStatus::Requested | ServiceStatus::Submitted | ServiceStatus::Unknown => {
                self.record.status = ServiceStatus::Requested;
                self.schedule();
                Ok(())
            }
            ServiceStatus::Accepted | ServiceStatus::Settled => Err(self.conflict("not found")),
            ServiceStatus::Rejected => Ok(()),
            ServiceStatus::Offered | ServiceStatus::Active | ServiceStatus::InArrears | ServiceStatus::Closed => {
                Err(not_a_payment())
            }
        }
    }

    fn submit_failed(&mut self, error: &CallError) -> Result<(), TransitionError> {
        use ServiceStatus as S;
        match (self.record.status, error) {
            (S::Requested | S::Submitted | S::Unknown, CallError::Refused(refusal)) => {
                self.decide(S::Rejected);
                self.record.reason = refusal.code.clone();
            }
            (S::Accepted | S::Settled, CallError::Refused(_)) => return Err(self.conflict("refused")),
            // Definitely not received: send again later, with the same key.
            (S::Submitted, CallError::NotSent(_)) => {
                self.record.status = S::Requested;
                self.schedule();
            }
            // Maybe received: ask, never send blindly.
            (S::Requested | S::Submitted, CallError::Unknown(_)) => {
                self.record.status = S::Unknown;
                self.schedule();
            }
            // A late failure of a call whose outcome is known or already being reconciled.
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self, before: &ServiceRecord) -> Transition {
        let stuck_after = seconds(self.policy.stuck_after_s);
        if self.record.status.money_decided() {
            self.record.stuck_since = None;
        } else if self.record.stuck_since.is_none() && self.now - self.record.created_at >= stuck_after {
            self.record.stuck_since = Some(self.now);
        }
        if self.record != *before {
            self.record.updated_at = self.now;
        }
        if self.record.status != before.status || self.record.stuck_since != before.stuck_since {
            self.effects.push(Effect::Emit(event(&self.record)));
        }
        Transition { record: self.record, effects: self.effects }
    }
}
