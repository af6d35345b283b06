//! The life of a loan as a pure state machine over its [`ServiceRecord`]: [`apply`] makes the
//! record of an application, [`transition`] applies one input (the worker's turn, the loan
//! provider's decision or a failed call, the customer's acceptance or early repayment, the
//! collection of an instalment) and says what the adapter must write atomically with the new
//! record (lifecycle [`Effect`]s: postings, the loan's receivable account, events, calls). The
//! loan provider is an outside party behind [`LoanProvider`], called with our [`CallKey`] and
//! reconciled as the payment rail is (an unknown outcome is asked about, never decided again
//! blindly).
//!
//! ```text
//! The application (a decision, or a status report of one, moves `submitted` or `unknown`):
//!               Due ⇒ Decide(key)                 Approved ⇒ an offer
//!   requested ───────────────────▶ submitted ───────────────────────────────▶ offered
//!     ▲    ▲                        │     │   Declined, call Refused             │ Due past
//!     │    └──── call NotSent ──────┘     ├─────────────────────────▶ rejected ◀─┘ its expiry
//!     │                                   │ call Unknown
//!     └──── status NotFound ──── unknown ◀┘   (Due ⇒ QueryDecision(key), back-off, until known)
//!
//! The loan:
//!   offered ── Accept (SCA) ⇒ receivable, disbursement, fee ──▶ active ── Collect: the last
//!                                                               │  ▲      instalment, or Repay
//!                                           Collect: too little │  │      in full ──▶ closed
//!                                                               ▼  │ Collect: caught up
//!                                                            in_arrears (retried with back-off)
//! ```
//!
//! # Money
//! Every amount is an integer of minor units; the ledger's rules (`rules::apply_service`) accept
//! exactly these legs, each posted at once by the step that makes it:
//! - **accept**: [`Effect::OpenReceivable`] (the loan's own receivable account), then
//!   `Loan` loan funding → the customer's account (the principal, *disbursement*), `Loan`
//!   receivable → loan funding (the principal the customer now owes), `Fee` customer → fees
//!   (the provider's fee, if any);
//! - **an instalment**: `Loan` customer → receivable (its principal part), `Interest`
//!   customer → interest income (its interest part, if any);
//! - **an early repayment**: `Loan` customer → receivable (principal only: interest accrued in
//!   the current period is not charged, [`schedule`](super::schedule)'s convention).
//!
//! So the receivable's balance is always minus the outstanding principal, and zero when the
//! loan is closed. Transfer ids are derived from the record ([`transfer_id`]) or, for an early
//! repayment, from the customer's idempotency key, so a retried step never moves money twice.
//!
//! # Collecting instalments
//! The pure machine cannot see balances: the worker reads the account and passes its available
//! balance in [`LoanInput::Collect`]. Every instalment due (from 00:00 UTC of its due date) is
//! collected whole, in order, while the balance covers it; never into the overdraft. One not
//! covered puts the loan in arrears (an event) and the worker tries again after the policy's
//! arrears back-off. If the write then fails with `InsufficientFunds` (the customer spent the
//! money between the read and the write) nothing was written: the worker reads the record and
//! the balance again and applies `Collect` to what is there now, which moves the loan into
//! arrears. A frozen or closed account is passed as an available balance of zero.
//! `docs/external-services.md` has the full table.

use async_trait::async_trait;
use chrono::{Months, NaiveDate, NaiveTime, TimeDelta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::lifecycle::{Effect, Transition, event};
use super::schedule::{self, Instalment, ScheduleError, TERM_MONTHS_MAX};
use super::{BackOff, CallError, CallKey, ReasonCode};
use crate::Timestamp;
use crate::account::SystemAccount;
use crate::ids::{AccountId, CustomerId, ServiceRecordId, TransferId};
use crate::money::Money;
use crate::payments::{IdempotencyKey, transfer_id as key_transfer_id};
use crate::rate::Rate;
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use crate::transfer::{TransferKind, TransferRequest};

/// Namespace of the ids derived from a loan: its record, receivable account and transfers.
const LOAN_NAMESPACE: Uuid = Uuid::from_u128(0x1a0e_5c3d_77b2_4e0f_9d61_0b8a_f2c4_e519);

/// Longest purpose of a loan, in characters.
pub const PURPOSE_CHARS_MAX: usize = 140;

/// Longest an offer may be valid for, in seconds (90 days).
pub const OFFER_VALID_S_MAX: u64 = 90 * 86_400;

/// What the loan provider is asked to decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoanApplication {
    /// The applicant.
    pub customer: CustomerId,
    /// The principal asked for.
    pub amount: Money,
    /// The term asked for, in monthly instalments.
    pub term_months: u32,
    /// What the loan is for, in the customer's words.
    pub purpose: String,
    /// When the customer applied.
    pub requested_at: Timestamp,
}

impl LoanApplication {
    /// The application of loan `record`, if it is a loan's.
    pub fn of(record: &ServiceRecord) -> Option<Self> {
        let details = LoanDetails::of(record)?;
        Some(Self {
            customer: record.customer_id,
            amount: record.amount,
            term_months: details.requested_term_months,
            purpose: details.purpose,
            requested_at: record.created_at,
        })
    }
}

/// Whether loan records `stored` and `new` hold the same application (term and purpose; the
/// envelope's customer, account and amount are compared by the caller): what makes a request a
/// retry, however far the stored loan has come since.
pub fn same_application(stored: &ServiceRecord, new: &ServiceRecord) -> bool {
    match (LoanDetails::of(stored), LoanDetails::of(new)) {
        (Some(s), Some(n)) => s.requested_term_months == n.requested_term_months && s.purpose == n.purpose,
        _ => false,
    }
}

/// What the worker gives a loan's turn: for a loan being repaid, `Collect` with what its
/// repayment `account` can pay now (its available balance, never into the overdraft; nothing
/// from a frozen or closed account, or none); otherwise `Due`.
pub fn turn_input(record: &ServiceRecord, account: Option<&crate::account::Account>) -> LoanInput {
    if !matches!(record.status, ServiceStatus::Active | ServiceStatus::InArrears) {
        return LoanInput::Due;
    }
    let available_minor = match account {
        Some(a) if a.status == crate::account::AccountStatus::Active => a.available_minor().max(0),
        _ => 0,
    };
    LoanInput::Collect { available_minor }
}

/// The loan provider's decision on an application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum LoanDecision {
    /// Approved: the offer the customer may accept.
    Approved {
        /// The annual interest rate (0 allowed), applied 30/360 ([`schedule`](super::schedule)).
        annual_rate: Rate,
        /// The fee, in the loan's currency, taken from the account at disbursement (0 allowed).
        fee: Money,
        /// The term, in monthly instalments (it may differ from the one asked for).
        term_months: u32,
    },
    /// Declined.
    Declined {
        /// The provider's reason code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<ReasonCode>,
    },
}

/// What a status query to the loan provider learnt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum DecisionStatus {
    /// The provider has the application under our key, and decided it.
    Known {
        /// Its decision.
        decision: LoanDecision,
    },
    /// The provider has no application under our key: it never received it, so it may be sent
    /// again with the same key.
    NotFound,
}

/// The loan provider as an outside party (a credit-decision engine, a partner lender, the
/// development simulator, a test double). Both calls carry our key: `decide` with the same key
/// twice must answer the first decision again, never decide twice.
#[async_trait]
pub trait LoanProvider: Send + Sync + std::fmt::Debug {
    /// Asks for a decision on `application` under `key`.
    async fn decide(&self, application: &LoanApplication, key: &CallKey) -> Result<LoanDecision, CallError>;

    /// Asks what was decided on the application sent under `key`.
    async fn status(&self, key: &CallKey) -> Result<DecisionStatus, CallError>;
}

/// The bounds of a loan's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoanPolicy {
    /// Delays between calls to the provider (decisions and status queries).
    pub back_off: BackOff,
    /// Undecided this long after the application, a loan is flagged stuck for operators
    /// (seconds); its calls go on.
    pub stuck_after_s: u64,
    /// How long an offer may be accepted, in seconds (at most [`OFFER_VALID_S_MAX`]).
    pub offer_valid_s: u64,
    /// Delays between attempts to collect an instalment in arrears.
    pub arrears_back_off: BackOff,
}

impl Default for LoanPolicy {
    /// Calls: back-off from 1 s to 10 min, stuck after 1 hour; offers valid 14 days; arrears
    /// retried from 1 hour, doubling up to a day.
    fn default() -> Self {
        Self {
            back_off: BackOff::default(),
            stuck_after_s: 3_600,
            offer_valid_s: 14 * 86_400,
            arrears_back_off: BackOff { first_ms: 3_600_000, max_ms: 86_400_000 },
        }
    }
}

impl LoanPolicy {
    /// Refuses bounds under which delays would be zero or shrink, or offers never expire.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.back_off.validate()?;
        self.arrears_back_off.validate()?;
        if self.offer_valid_s == 0 || self.offer_valid_s > OFFER_VALID_S_MAX {
            return Err("loan policy: offer_valid_s must be between 1 and OFFER_VALID_S_MAX (90 days)");
        }
        Ok(())
    }
}

/// A customer's application, as the server hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLoan {
    /// The record's id ([`loan_id`] of the customer's idempotency key).
    pub id: ServiceRecordId,
    /// The applicant.
    pub customer: CustomerId,
    /// The customer's account the loan is paid into and repaid from.
    pub account: AccountId,
    /// The principal asked for, in the account's currency.
    pub amount: Money,
    /// The term asked for, in monthly instalments.
    pub term_months: u32,
    /// What the loan is for.
    pub purpose: String,
}

/// An application that cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoanRequestError {
    /// The amount is not positive.
    #[error("the amount must be positive")]
    Amount,
    /// The term is out of bounds.
    #[error("a loan has 1 to {TERM_MONTHS_MAX} monthly instalments")]
    Term,
    /// The purpose is empty, too long or has a control character.
    #[error("the purpose is 1 to {PURPOSE_CHARS_MAX} characters, without control characters")]
    Purpose,
}

/// An input that cannot be applied to a loan; nothing is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoanTransitionError {
    /// The record is not a loan's (another kind, a payment's status, details that do not read).
    #[error("not a loan: {0}")]
    NotALoan(&'static str),
    /// The provider's report contradicts what is decided: an operator must look.
    #[error("a {reported} report conflicts with a {status:?} loan")]
    Conflict {
        /// The record's status.
        status: ServiceStatus,
        /// What was reported.
        reported: &'static str,
    },
    /// Only an offered loan can be accepted.
    #[error("the loan is {status:?}, not offered")]
    NotOffered {
        /// The record's status.
        status: ServiceStatus,
    },
    /// The offer expired before it was accepted.
    #[error("the offer expired at {expired_at}")]
    OfferExpired {
        /// When.
        expired_at: Timestamp,
    },
    /// Only an active loan can be repaid early.
    #[error("the loan is {status:?}: only an active loan can be repaid early")]
    NotActive {
        /// The record's status.
        status: ServiceStatus,
    },
    /// An instalment is due and not yet collected (in arrears, or due today): it is collected
    /// first, then the loan may be repaid early.
    #[error("instalment {number} due on {due_on} is not paid yet")]
    InstalmentDue {
        /// The instalment.
        number: u32,
        /// Its due date.
        due_on: NaiveDate,
    },
    /// An early repayment's amount is not positive, in another currency, or more than the
    /// outstanding principal.
    #[error("an early repayment is more than zero and at most the outstanding {outstanding}")]
    RepaymentAmount {
        /// The outstanding principal.
        outstanding: Money,
    },
    /// A partial repayment would leave too little to spread over the remaining instalments.
    #[error("the repayment leaves too little for the remaining instalments: repay less, or in full")]
    RemainderTooSmall,
    /// The repayment's id was used for another amount.
    #[error("repayment {id} was made with another amount")]
    RepaymentConflict {
        /// The repayment's transfer id.
        id: TransferId,
    },
    /// An instalment is due and the worker passed no balance (`Due` instead of `Collect`).
    #[error("an instalment is due: the worker must pass the account's balance (Collect)")]
    BalanceNeeded,
    /// The schedule cannot be computed.
    #[error(transparent)]
    Schedule(ScheduleError),
}

/// Why a loan ended as `rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoanRejection {
    /// The provider declined it (its reason code is the record's `reason`).
    Declined,
    /// The provider refused the application as a request (a 4xx-like answer).
    Refused,
    /// The provider approved terms the bank cannot honour (a fee not below the principal or
    /// in another currency, a term out of bounds, a schedule that cannot be computed).
    InvalidOffer,
    /// The customer did not accept the offer in time.
    OfferExpired,
}

/// The offer of an approved loan, as the customer sees it before accepting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoanOffer {
    /// The annual interest rate.
    pub annual_rate: Rate,
    /// The fee taken at disbursement.
    pub fee: Money,
    /// The term, in monthly instalments.
    pub term_months: u32,
    /// The monthly instalment (the last one absorbs the rounding).
    pub instalment: Money,
    /// The interest of the whole schedule.
    pub total_interest: Money,
    /// Until when it may be accepted.
    pub expires_at: Timestamp,
}

impl LoanOffer {
    /// Whether the offer may still be accepted at `now`: `OfferExpired` from its expiry on.
    pub fn open_at(&self, now: Timestamp) -> Result<(), LoanTransitionError> {
        if now >= self.expires_at {
            return Err(LoanTransitionError::OfferExpired { expired_at: self.expires_at });
        }
        Ok(())
    }
}

/// Whether a loan in `status` was accepted (disbursed): active, in arrears or closed.
pub fn accepted(status: ServiceStatus) -> bool {
    matches!(status, ServiceStatus::Active | ServiceStatus::InArrears | ServiceStatus::Closed)
}

/// The money moved when the loan was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disbursement {
    /// When the customer accepted.
    pub accepted_at: Timestamp,
    /// Loan funding → the customer's account.
    pub transfer: TransferId,
    /// Receivable → loan funding.
    pub receivable_transfer: TransferId,
    /// Customer → fees, when there is a fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_transfer: Option<TransferId>,
}

/// Whether an instalment is paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstalmentState {
    /// Not paid: upcoming before its due date, overdue after.
    Due,
    /// Collected.
    Paid {
        /// When.
        paid_on: NaiveDate,
        /// Customer → receivable.
        principal_transfer: TransferId,
        /// Customer → interest income, when there is interest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interest_transfer: Option<TransferId>,
    },
}

/// One instalment of a loan's schedule, with its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoanInstalment {
    /// Its number, from 1.
    pub number: u32,
    /// The day it is due.
    pub due_on: NaiveDate,
    /// The part that repays principal.
    pub principal: Money,
    /// The part that pays interest.
    pub interest: Money,
    /// What is collected: `principal + interest`.
    pub total: Money,
    /// The principal still owed once it is paid.
    pub outstanding_after: Money,
    /// Paid or due.
    #[serde(flatten)]
    pub state: InstalmentState,
}

impl LoanInstalment {
    fn due(i: Instalment) -> Self {
        Self {
            number: i.number,
            due_on: i.due_on,
            principal: i.principal,
            interest: i.interest,
            total: i.total,
            outstanding_after: i.outstanding_after,
            state: InstalmentState::Due,
        }
    }

    /// Whether it has been collected.
    pub fn is_paid(&self) -> bool {
        matches!(self.state, InstalmentState::Paid { .. })
    }
}

/// An instalment not collected on time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Arrears {
    /// The due date of the oldest instalment not paid.
    pub since: NaiveDate,
    /// Attempts to collect that found too little, since the loan fell into arrears.
    pub attempts: u32,
    /// The last of them.
    pub last_attempt_at: Timestamp,
}

/// An early repayment of principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlyRepayment {
    /// Customer → receivable (its id is derived from the customer's idempotency key).
    pub transfer: TransferId,
    /// The principal repaid.
    pub amount: Money,
    /// When.
    pub repaid_at: Timestamp,
}

/// What a loan's record keeps in its `details`, beyond the envelope (whose `amount` is the
/// principal and `account_id` the account paid into and repaid from).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoanDetails {
    /// What the loan is for.
    pub purpose: String,
    /// The term the customer asked for.
    pub requested_term_months: u32,
    /// Our key with the provider.
    pub key: CallKey,
    /// The loan's receivable account (opened at acceptance).
    pub receivable: AccountId,
    /// The provider's decision, as it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<LoanDecision>,
    /// The offer, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<LoanOffer>,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<LoanRejection>,
    /// The money moved at acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disbursement: Option<Disbursement>,
    /// The instalments: paid ones, then the plan for the rest (recomputed after a partial
    /// early repayment; dropped after a full one).
    #[serde(default)]
    pub schedule: Vec<LoanInstalment>,
    /// The principal owed now (zero before disbursement and once closed).
    pub outstanding: Money,
    /// Set while in arrears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrears: Option<Arrears>,
    /// Early repayments, in order.
    #[serde(default)]
    pub repayments: Vec<EarlyRepayment>,
}

impl LoanDetails {
    /// The details of `record`, if it is a loan's.
    pub fn of(record: &ServiceRecord) -> Option<Self> {
        if record.kind != ServiceKind::Loan {
            return None;
        }
        serde_json::from_value(serde_json::Value::Object(record.details.clone())).ok()
    }

    /// The first instalment not paid yet.
    pub fn next_due(&self) -> Option<&LoanInstalment> {
        self.schedule.iter().find(|i| !i.is_paid())
    }

    fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("a struct of serialisable fields serialises to a JSON object"),
        }
    }
}

/// The input of one step of a loan's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoanInput {
    /// The worker's turn for a loan not being repaid: an application is sent to the provider
    /// (recorded as submitted before the call goes out) or asked about; an offer past its
    /// expiry is rejected. Before `next_check_at` it changes nothing. On an active loan with an
    /// instalment due it is [`LoanTransitionError::BalanceNeeded`]: pass `Collect`.
    Due,
    /// The worker's turn with the account's available balance (posted − held, in minor units;
    /// 0 for an account that cannot be debited): collects every instalment due that it covers.
    /// On a loan not being repaid it is `Due`. The worker may always pass this one.
    Collect {
        /// The account's available balance.
        available_minor: i64,
    },
    /// The provider's answer to our `Decide` call.
    Decided(LoanDecision),
    /// Our `Decide` call failed.
    DecideFailed(CallError),
    /// The answer to our `QueryDecision` call.
    StatusReport(DecisionStatus),
    /// Our `QueryDecision` call failed: nothing changes (the next one is scheduled).
    StatusFailed(CallError),
    /// The customer accepted the offer (the server has checked SCA).
    Accept,
    /// The customer repays `amount` of principal early: in part (the remaining schedule is
    /// recomputed) or in full (the loan closes).
    Repay {
        /// The repayment's transfer id, derived from the customer's idempotency key
        /// (`payments::transfer_id`): the same id again is a replay.
        id: TransferId,
        /// The principal repaid.
        amount: Money,
    },
}

/// Which of a loan's own transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoanLeg {
    /// Loan funding → the customer.
    Disbursement,
    /// Receivable → loan funding.
    Receivable,
    /// Customer → fees.
    Fee,
    /// Customer → receivable, the principal of instalment `n`.
    InstalmentPrincipal(u32),
    /// Customer → interest income, the interest of instalment `n`.
    InstalmentInterest(u32),
}

fn derived(record: ServiceRecordId, purpose: &str, number: u32) -> Uuid {
    let mut name = record.as_uuid().as_bytes().to_vec();
    name.extend_from_slice(purpose.as_bytes());
    name.extend_from_slice(&number.to_be_bytes());
    Uuid::new_v5(&LOAN_NAMESPACE, &name)
}

/// The id of loan `record`'s transfer `leg`: the same on every retry of the step that posts it.
pub fn transfer_id(record: ServiceRecordId, leg: LoanLeg) -> TransferId {
    let uuid = match leg {
        LoanLeg::Disbursement => derived(record, "disbursement", 0),
        LoanLeg::Receivable => derived(record, "receivable", 0),
        LoanLeg::Fee => derived(record, "fee", 0),
        LoanLeg::InstalmentPrincipal(n) => derived(record, "instalment-principal", n),
        LoanLeg::InstalmentInterest(n) => derived(record, "instalment-interest", n),
    };
    TransferId::from_uuid(uuid)
}

/// The id of loan `record`'s receivable account.
pub fn receivable_account(record: ServiceRecordId) -> AccountId {
    AccountId::from_uuid(derived(record, "receivable-account", 0))
}

/// The record id of the loan a customer applies for under idempotency key `key`: the same key
/// of the same customer always reaches the same application.
pub fn loan_id(customer: CustomerId, key: &IdempotencyKey) -> ServiceRecordId {
    let of = key_transfer_id(customer, key);
    ServiceRecordId::from_uuid(Uuid::new_v5(&LOAN_NAMESPACE, of.as_uuid().as_bytes()))
}

/// Our key with the provider for loan `id`: its 32 hex digits.
fn call_key(id: ServiceRecordId) -> CallKey {
    CallKey::parse(&id.as_uuid().simple().to_string()).unwrap_or_else(|_| unreachable!("32 hex digits are a call key"))
}

/// The start of `day` (00:00 UTC): when an instalment due that day is collected.
pub fn start_of(day: NaiveDate) -> Timestamp {
    day.and_time(NaiveTime::MIN).and_utc()
}

fn purpose_ok(purpose: &str) -> bool {
    let chars = purpose.chars().count();
    !purpose.trim().is_empty() && chars <= PURPOSE_CHARS_MAX && !purpose.chars().any(char::is_control)
}

/// The record of a new application (`requested`, due at once, no money held) and its effect:
/// emit `service.updated`. The store writes it with `ServiceStore::request`; the worker then
/// sends it to the provider.
pub fn apply(loan: &NewLoan, now: Timestamp) -> Result<Transition, LoanRequestError> {
    if !loan.amount.is_positive() {
        return Err(LoanRequestError::Amount);
    }
    if !(1..=TERM_MONTHS_MAX).contains(&loan.term_months) {
        return Err(LoanRequestError::Term);
    }
    if !purpose_ok(&loan.purpose) {
        return Err(LoanRequestError::Purpose);
    }
    let details = LoanDetails {
        purpose: loan.purpose.clone(),
        requested_term_months: loan.term_months,
        key: call_key(loan.id),
        receivable: receivable_account(loan.id),
        decision: None,
        offer: None,
        rejection: None,
        disbursement: None,
        schedule: Vec::new(),
        outstanding: Money::zero(loan.amount.currency()),
        arrears: None,
        repayments: Vec::new(),
    };
    let record = ServiceRecord {
        id: loan.id,
        customer_id: loan.customer,
        kind: ServiceKind::Loan,
        status: ServiceStatus::Requested,
        account_id: loan.account,
        amount: loan.amount,
        transfers: Vec::new(),
        checks: 0,
        next_check_at: Some(now),
        stuck_since: None,
        reason: None,
        details: details.to_map(),
        version: 0,
        created_at: now,
        updated_at: now,
    };
    let effects = vec![Effect::Emit(event(&record))];
    Ok(Transition { record, effects })
}

/// Applies `input` to loan `record` at `now`; `random` is a value of the injected generator,
/// for the jitter of the next call or collection attempt. See the module documentation.
pub fn transition(
    record: &ServiceRecord,
    input: &LoanInput,
    now: Timestamp,
    policy: &LoanPolicy,
    random: u64,
) -> Result<Transition, LoanTransitionError> {
    if record.kind != ServiceKind::Loan {
        return Err(LoanTransitionError::NotALoan("another kind of service"));
    }
    if matches!(record.status, ServiceStatus::Accepted | ServiceStatus::Settled) {
        return Err(LoanTransitionError::NotALoan("in a payment's status"));
    }
    let details = LoanDetails::of(record).ok_or(LoanTransitionError::NotALoan("details"))?;
    let mut step = Step { record: record.clone(), details, effects: Vec::new(), moved: false, now, policy, random };
    match input {
        LoanInput::Due => step.due(None)?,
        LoanInput::Collect { available_minor } => step.due(Some(*available_minor))?,
        LoanInput::Decided(decision) | LoanInput::StatusReport(DecisionStatus::Known { decision }) => {
            step.decided(decision)?;
        }
        LoanInput::StatusReport(DecisionStatus::NotFound) => step.not_found()?,
        LoanInput::DecideFailed(error) => step.decide_failed(error)?,
        // The next query was scheduled when this one went out.
        LoanInput::StatusFailed(_) => {}
        LoanInput::Accept => step.accept()?,
        LoanInput::Repay { id, amount } => step.repay(*id, *amount)?,
    }
    Ok(step.finish(record))
}

fn millis(ms: u64) -> TimeDelta {
    TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000))
}

fn seconds(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1_000_000))
}

fn overflow<E>(_: E) -> LoanTransitionError {
    LoanTransitionError::Schedule(ScheduleError::Overflow)
}

/// Whether a loan in `status` is still waiting for the provider.
fn deciding(status: ServiceStatus) -> bool {
    matches!(status, ServiceStatus::Requested | ServiceStatus::Submitted | ServiceStatus::Unknown)
}

/// One transition in the making.
struct Step<'a> {
    record: ServiceRecord,
    details: LoanDetails,
    effects: Vec<Effect>,
    /// Whether the step posts money (the customer sees a changed schedule: an event).
    moved: bool,
    now: Timestamp,
    policy: &'a LoanPolicy,
    random: u64,
}

impl Step<'_> {
    fn today(&self) -> NaiveDate {
        self.now.date_naive()
    }

    fn currency(&self) -> crate::money::Currency {
        self.record.amount.currency()
    }

    fn conflict(&self, reported: &'static str) -> LoanTransitionError {
        LoanTransitionError::Conflict { status: self.record.status, reported }
    }

    /// Schedules the next call to the provider with the back-off of the calls made so far.
    fn schedule_call(&mut self) {
        let delay = self.policy.back_off.delay_ms(self.record.checks, self.random);
        self.record.next_check_at = Some(self.now + millis(delay));
    }

    fn reject(&mut self, why: LoanRejection, reason: Option<ReasonCode>) {
        self.record.status = ServiceStatus::Rejected;
        self.record.reason = reason;
        self.record.checks = 0;
        self.record.next_check_at = None;
        self.details.rejection = Some(why);
    }

    fn post(&mut self, request: TransferRequest) {
        self.record.transfers.push(request.id);
        self.effects.push(Effect::Post(request));
        self.moved = true;
    }

    fn due(&mut self, available_minor: Option<i64>) -> Result<(), LoanTransitionError> {
        match self.record.status {
            s if deciding(s) => self.call_due(),
            ServiceStatus::Offered => {
                if let Some(offer) = &self.details.offer
                    && offer.open_at(self.now).is_err()
                {
                    self.reject(LoanRejection::OfferExpired, None);
                }
            }
            ServiceStatus::Active | ServiceStatus::InArrears => self.collect(available_minor)?,
            _ => {}
        }
        Ok(())
    }

    /// Sends the application, or asks about it, when its check has come.
    fn call_due(&mut self) {
        if self.record.next_check_at.is_some_and(|at| at > self.now) {
            return;
        }
        let key = self.details.key.clone();
        let call = match self.record.status {
            ServiceStatus::Requested => {
                self.record.status = ServiceStatus::Submitted;
                Effect::Decide(key)
            }
            _ => Effect::QueryDecision(key),
        };
        self.schedule_call();
        self.record.checks = self.record.checks.saturating_add(1);
        self.effects.push(call);
    }

    fn decided(&mut self, decision: &LoanDecision) -> Result<(), LoanTransitionError> {
        match &self.details.decision {
            // The same answer again (a retried call, a status query after the answer).
            Some(known) if known == decision => return Ok(()),
            Some(_) => return Err(self.conflict("different decision")),
            None if !deciding(self.record.status) => return Err(self.conflict("decision")),
            None => {}
        }
        self.details.decision = Some(decision.clone());
        match decision {
            LoanDecision::Declined { reason } => self.reject(LoanRejection::Declined, reason.clone()),
            LoanDecision::Approved { annual_rate, fee, term_months } => {
                match self.offer(*annual_rate, *fee, *term_months) {
                    Some(offer) => {
                        self.record.status = ServiceStatus::Offered;
                        self.record.checks = 0;
                        self.record.next_check_at = Some(offer.expires_at);
                        self.details.offer = Some(offer);
                    }
                    None => self.reject(LoanRejection::InvalidOffer, None),
                }
            }
        }
        Ok(())
    }

    /// The offer of approved terms, if the bank can honour them.
    fn offer(&self, annual_rate: Rate, fee: Money, term_months: u32) -> Option<LoanOffer> {
        let principal = self.record.amount;
        let fee_ok =
            fee.currency() == self.currency() && !fee.is_negative() && fee.amount_minor() < principal.amount_minor();
        if !fee_ok {
            return None;
        }
        let first_due = self.today().checked_add_months(Months::new(1))?;
        let preview = schedule::annuity(principal, annual_rate, term_months, first_due).ok()?;
        Some(LoanOffer {
            annual_rate,
            fee,
            term_months,
            instalment: preview.instalments.first()?.total,
            total_interest: preview.total_interest()?,
            expires_at: self.now + seconds(self.policy.offer_valid_s),
        })
    }

    fn not_found(&mut self) -> Result<(), LoanTransitionError> {
        match self.record.status {
            // Never received: send it again, with the same key, at the next check.
            s if deciding(s) => {
                self.record.status = ServiceStatus::Requested;
                self.schedule_call();
                Ok(())
            }
            ServiceStatus::Rejected => Ok(()),
            _ => Err(self.conflict("not found")),
        }
    }

    fn decide_failed(&mut self, error: &CallError) -> Result<(), LoanTransitionError> {
        use ServiceStatus as S;
        match (self.record.status, error) {
            (s, CallError::Refused(refusal)) if deciding(s) => {
                self.reject(LoanRejection::Refused, refusal.code.clone());
            }
            (S::Offered | S::Active | S::InArrears | S::Closed, CallError::Refused(_)) => {
                return Err(self.conflict("refused"));
            }
            // Definitely not received: send again later, with the same key.
            (S::Submitted, CallError::NotSent(_)) => {
                self.record.status = S::Requested;
                self.schedule_call();
            }
            // Maybe received: ask, never send blindly.
            (S::Requested | S::Submitted, CallError::Unknown(_)) => {
                self.record.status = S::Unknown;
                self.schedule_call();
            }
            // A late failure of a call whose outcome is known or already being reconciled.
            _ => {}
        }
        Ok(())
    }

    /// The customer accepts the offer: the receivable, the disbursement, the fee; the schedule
    /// from today, the first instalment due a month later.
    fn accept(&mut self) -> Result<(), LoanTransitionError> {
        match self.record.status {
            ServiceStatus::Offered => {}
            // Accepted before: a retry changes nothing.
            status if accepted(status) => return Ok(()),
            status => return Err(LoanTransitionError::NotOffered { status }),
        }
        let offer = self.details.offer.clone().ok_or(LoanTransitionError::NotALoan("offered without an offer"))?;
        offer.open_at(self.now)?;
        let first_due = self.today().checked_add_months(Months::new(1)).ok_or(ScheduleError::DueDate);
        let first_due = first_due.map_err(LoanTransitionError::Schedule)?;
        let plan = schedule::annuity(self.record.amount, offer.annual_rate, offer.term_months, first_due)
            .map_err(LoanTransitionError::Schedule)?;
        let id = self.record.id;
        let (account, principal, currency) = (self.record.account_id, self.record.amount, self.currency());
        let funding = SystemAccount::LoanFunding.id(currency);
        let receivable = self.details.receivable;
        self.effects.push(Effect::OpenReceivable(receivable));
        let leg = |leg, kind, debit_account, credit_account, amount, reference: &str| TransferRequest {
            id: transfer_id(id, leg),
            kind,
            debit_account,
            credit_account,
            amount,
            reference: Some(reference.to_owned()),
            hold_until: None,
        };
        self.post(leg(LoanLeg::Disbursement, TransferKind::Loan, funding, account, principal, "loan disbursement"));
        self.post(leg(LoanLeg::Receivable, TransferKind::Loan, receivable, funding, principal, "loan receivable"));
        let fee_transfer = offer.fee.is_positive().then(|| {
            let fees = SystemAccount::Fees.id(currency);
            leg(LoanLeg::Fee, TransferKind::Fee, account, fees, offer.fee, "loan fee")
        });
        let fee_id = fee_transfer.as_ref().map(|t| t.id);
        if let Some(fee) = fee_transfer {
            self.post(fee);
        }
        self.details.disbursement = Some(Disbursement {
            accepted_at: self.now,
            transfer: transfer_id(id, LoanLeg::Disbursement),
            receivable_transfer: transfer_id(id, LoanLeg::Receivable),
            fee_transfer: fee_id,
        });
        self.details.schedule = plan.instalments.into_iter().map(LoanInstalment::due).collect();
        self.details.outstanding = principal;
        self.record.status = ServiceStatus::Active;
        self.record.checks = 0;
        self.record.next_check_at = Some(start_of(first_due));
        Ok(())
    }

    /// Collects every instalment due that `available_minor` covers, in order; then the loan is
    /// closed, active until its next due date, or in arrears.
    fn collect(&mut self, available_minor: Option<i64>) -> Result<(), LoanTransitionError> {
        let today = self.today();
        let mut available = available_minor;
        let mut paid_any = false;
        while let Some(index) = self.details.schedule.iter().position(|i| !i.is_paid() && i.due_on <= today) {
            let total = self.details.schedule[index].total.amount_minor();
            let Some(left) = available else { return Err(LoanTransitionError::BalanceNeeded) };
            if left < total {
                break;
            }
            available = Some(left - total);
            self.pay(index)?;
            paid_any = true;
        }
        match self.details.next_due().map(|i| i.due_on) {
            None => self.close(),
            Some(due_on) if due_on <= today => self.arrears(due_on, paid_any),
            Some(due_on) => {
                self.record.status = ServiceStatus::Active;
                self.record.checks = 0;
                self.record.next_check_at = Some(start_of(due_on));
                self.details.arrears = None;
            }
        }
        Ok(())
    }

    /// Posts instalment `index` and marks it paid.
    fn pay(&mut self, index: usize) -> Result<(), LoanTransitionError> {
        let instalment = self.details.schedule[index].clone();
        let (id, n, account) = (self.record.id, instalment.number, self.record.account_id);
        let principal_transfer = transfer_id(id, LoanLeg::InstalmentPrincipal(n));
        self.post(TransferRequest {
            id: principal_transfer,
            kind: TransferKind::Loan,
            debit_account: account,
            credit_account: self.details.receivable,
            amount: instalment.principal,
            reference: Some(format!("loan instalment {n}")),
            hold_until: None,
        });
        let interest_transfer =
            instalment.interest.is_positive().then(|| transfer_id(id, LoanLeg::InstalmentInterest(n)));
        if let Some(interest_id) = interest_transfer {
            self.post(TransferRequest {
                id: interest_id,
                kind: TransferKind::Interest,
                debit_account: account,
                credit_account: SystemAccount::InterestIncome.id(self.currency()),
                amount: instalment.interest,
                reference: Some(format!("loan interest {n}")),
                hold_until: None,
            });
        }
        self.details.outstanding = self.details.outstanding.checked_sub(instalment.principal).map_err(overflow)?;
        debug_assert_eq!(self.details.outstanding, instalment.outstanding_after, "the schedule adds up");
        self.details.schedule[index].state =
            InstalmentState::Paid { paid_on: self.today(), principal_transfer, interest_transfer };
        Ok(())
    }

    /// Too little to collect instalment(s) due since `since`: in arrears, tried again after
    /// the arrears back-off. An early attempt that collected nothing changes nothing.
    fn arrears(&mut self, since: NaiveDate, paid_any: bool) {
        let waiting = self.record.next_check_at.is_some_and(|at| at > self.now);
        if self.record.status == ServiceStatus::InArrears && waiting && !paid_any {
            return;
        }
        if self.record.status != ServiceStatus::InArrears {
            self.record.status = ServiceStatus::InArrears;
            self.record.checks = 0;
        }
        let attempts = self.details.arrears.as_ref().map_or(0, |a| a.attempts);
        self.details.arrears = Some(Arrears { since, attempts: attempts.saturating_add(1), last_attempt_at: self.now });
        let delay = self.policy.arrears_back_off.delay_ms(self.record.checks, self.random);
        self.record.next_check_at = Some(self.now + millis(delay));
        self.record.checks = self.record.checks.saturating_add(1);
    }

    fn close(&mut self) {
        debug_assert!(self.details.outstanding.is_zero(), "a loan closes when nothing is owed");
        self.record.status = ServiceStatus::Closed;
        self.record.checks = 0;
        self.record.next_check_at = None;
        self.details.arrears = None;
    }

    /// An early repayment of principal: in full it closes the loan; in part the remaining
    /// instalments are recomputed (same count, lower instalment).
    fn repay(&mut self, id: TransferId, amount: Money) -> Result<(), LoanTransitionError> {
        if let Some(done) = self.details.repayments.iter().find(|r| r.transfer == id) {
            return if done.amount == amount { Ok(()) } else { Err(LoanTransitionError::RepaymentConflict { id }) };
        }
        if self.record.status != ServiceStatus::Active {
            return Err(LoanTransitionError::NotActive { status: self.record.status });
        }
        if let Some(due) = self.details.next_due().filter(|i| i.due_on <= self.today()) {
            return Err(LoanTransitionError::InstalmentDue { number: due.number, due_on: due.due_on });
        }
        let outstanding = self.details.outstanding;
        if amount.currency() != self.currency()
            || !amount.is_positive()
            || amount.amount_minor() > outstanding.amount_minor()
        {
            return Err(LoanTransitionError::RepaymentAmount { outstanding });
        }
        let left = outstanding.checked_sub(amount).map_err(overflow)?;
        let paid = self.details.schedule.iter().take_while(|i| i.is_paid()).count();
        if left.is_zero() {
            self.details.schedule.truncate(paid);
        } else {
            let offer = self.details.offer.clone().ok_or(LoanTransitionError::NotALoan("active without an offer"))?;
            let first = self.details.schedule.first().ok_or(LoanTransitionError::NotALoan("no schedule"))?;
            let next_number = self.details.schedule[paid].number;
            let rest = schedule::after_partial_repayment(
                left,
                offer.annual_rate,
                first.due_on,
                next_number,
                offer.term_months,
            )
            .map_err(|e| match e {
                ScheduleError::PrincipalTooSmall => LoanTransitionError::RemainderTooSmall,
                other => LoanTransitionError::Schedule(other),
            })?;
            self.details.schedule.truncate(paid);
            self.details.schedule.extend(rest.instalments.into_iter().map(LoanInstalment::due));
        }
        self.post(TransferRequest {
            id,
            kind: TransferKind::Loan,
            debit_account: self.record.account_id,
            credit_account: self.details.receivable,
            amount,
            reference: Some("loan early repayment".to_owned()),
            hold_until: None,
        });
        self.details.outstanding = left;
        self.details.repayments.push(EarlyRepayment { transfer: id, amount, repaid_at: self.now });
        if left.is_zero() {
            self.close();
        }
        Ok(())
    }

    fn finish(mut self, before: &ServiceRecord) -> Transition {
        let stuck_after = seconds(self.policy.stuck_after_s);
        if !deciding(self.record.status) {
            self.record.stuck_since = None;
        } else if self.record.stuck_since.is_none() && self.now - self.record.created_at >= stuck_after {
            self.record.stuck_since = Some(self.now);
        }
        self.record.details = self.details.to_map();
        if self.record != *before {
            self.record.updated_at = self.now;
        }
        if self.record.status != before.status || self.record.stuck_since != before.stuck_since || self.moved {
            self.effects.push(Effect::Emit(event(&self.record)));
        }
        Transition { record: self.record, effects: self.effects }
    }
}
