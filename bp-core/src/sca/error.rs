//! What strong customer authentication refuses, in kinds a caller can act on (and map to its
//! protocol: the reference server makes each an RFC 9457 problem). Messages name no secret and
//! no personal data.

use crate::error::StoreError;
use crate::security::ScaMethod;

/// Why a challenge, or what it authorizes, can no longer be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Its time ran out.
    Expired,
    /// It was answered already; an answer is spent once.
    Answered,
    /// Too many wrong answers.
    Failed,
    /// The payment it authorizes was confirmed already.
    PaymentConfirmed,
    /// The payment it authorizes expired or was cancelled.
    PaymentEnded,
    /// The beneficiary it would trust is trusted already.
    BeneficiaryTrusted,
}

impl Closed {
    /// The reason, in words for the customer.
    pub fn reason(self) -> &'static str {
        match self {
            Closed::Expired => "the challenge has expired",
            Closed::Answered => "the challenge was already answered",
            Closed::Failed => "the challenge failed after too many wrong answers",
            Closed::PaymentConfirmed => "the transfer was already confirmed",
            Closed::PaymentEnded => "the transfer expired or was cancelled",
            Closed::BeneficiaryTrusted => "the beneficiary is already trusted",
        }
    }
}

/// A request strong customer authentication refuses, or a failed store. Nothing was changed,
/// except what the variant says (a wrong answer counts towards the failure limits).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaError {
    /// The input breaks a rule (a name, a key, a proof).
    #[error("{0}")]
    Invalid(String),
    /// The record exists already.
    #[error("{0}")]
    Duplicate(&'static str),
    /// A limit is reached.
    #[error("{0}")]
    TooMany(String),
    /// No such record of this customer (another customer's records are not found either).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The answer names another challenge.
    #[error("the answer is for another challenge")]
    WrongChallenge,
    /// The answer's method is not one the challenge accepts (the ones it does are given;
    /// none when the customer must register a device first).
    #[error("{}", method_hint(.0))]
    MethodNotAccepted(Vec<ScaMethod>),
    /// The answer is wrong. It was counted: the challenge fails after
    /// `challenge_failures_max`, and the customer is locked out after `failures_max` in a row.
    #[error("the authentication answer is not valid for this challenge")]
    Failed,
    /// The challenge, or what it authorizes, can no longer be answered.
    #[error("{}", .0.reason())]
    Closed(Closed),
    /// The customer must sign in again first: this needs a sign-in at most `max_age_s` old
    /// (a step-up, RFC 9470).
    #[error("sign in again to do this (a sign-in at most {max_age_s} s old is needed)")]
    StepUp {
        /// The oldest sign-in accepted, in seconds.
        max_age_s: u64,
    },
    /// Too many failures in a row: locked out for a while.
    #[error("too many failed attempts; try again later")]
    LockedOut {
        /// Seconds until it unlocks.
        retry_after_s: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to answer with instead, when the method used is not accepted.
fn method_hint(accepted: &[ScaMethod]) -> &'static str {
    match accepted.first() {
        Some(ScaMethod::DeviceSignature) => "answer with a registered device's signature",
        Some(ScaMethod::Totp) => "answer with a TOTP code",
        None => "this payment needs a registered device key; register one first",
    }
}

impl From<Closed> for ScaError {
    fn from(c: Closed) -> Self {
        ScaError::Closed(c)
    }
}
