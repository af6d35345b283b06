//! The bank's outside parties (FR6) as the pure layer sees them: the vocabulary every call to
//! one of them shares, the payment rail ([`rail::PaymentRail`]), external payees
//! ([`payee`]), the lifecycle of an external payment ([`lifecycle`]) and of a loan
//! ([`loan`]), and payments coming in from the rail ([`incoming`]). Nothing here does I/O: the HTTP adapters, the store and the
//! reconciler worker plug into these types (`docs/external-services.md`).
//!
//! # One pattern for every outside party
//! Every call carries **our** idempotency key ([`CallKey`]), made before the first attempt and
//! reused on every retry and status query of the same order. Every call ends in one of:
//! - an answer (the party's own view of the order: [`rail::RailAnswer`] for a rail);
//! - [`CallError::Refused`]: the party answered and did not accept (a 4xx-like answer):
//!   definitely nothing happened there, so the funds held for it may be released;
//! - [`CallError::NotSent`]: the request never left (circuit open, no connection): definitely
//!   nothing happened, try again later **with the same key**;
//! - [`CallError::Unknown`]: it may or may not have happened (a timeout, a 5xx after the last
//!   retry, a connection lost mid-call, an answer we cannot read): the order must be
//!   reconciled by asking the party with the same key, never sent again under a new key.
//!
//! Part 2's parties fit the same pattern: an `FxProvider` quotes (a read, no key needed) and
//! executes a quote with a key (`execute(quote, key) -> Result<FxAnswer, CallError>`,
//! `status(key)`); a [`loan::LoanProvider`] decides an application under a key
//! (`decide(application, key)`) and answers its `status(key)`. Their lifecycles reuse
//! [`BackOff`] and the reconcile-by-key rule ([`loan`]: the loan's life).

pub mod fx;
pub mod incoming;
pub mod lifecycle;
pub mod loan;
pub mod payee;
pub mod rail;
pub mod schedule;

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::TransferId;

pub use payee::{BankIbans, Bic, ExternalAccount, PayeeError, PayeeName};
pub use rail::{PaymentRail, RailAnswer, RailId, RailOrder, RailStatus};

/// Longest call key, in characters: ISO 20022's `Max35Text`, so that the key can travel as a
/// pacs.008's end-to-end and transaction ids.
pub const CALL_KEY_LEN_MAX: usize = 35;

/// Our idempotency key of one order with an outside party: 1 to [`CALL_KEY_LEN_MAX`] ASCII
/// letters, digits or `-`. The same order always has the same key, on every retry and every
/// status query; the party answers a repeated key with the first answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(String);

/// A call key that is empty, too long or has a character outside `A-Z a-z 0-9 -`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a call key is 1 to {CALL_KEY_LEN_MAX} ASCII letters, digits or '-'")]
pub struct InvalidCallKey;

impl CallKey {
    /// The key `key`, if it is 1 to [`CALL_KEY_LEN_MAX`] ASCII letters, digits or `-`.
    pub fn parse(key: &str) -> Result<Self, InvalidCallKey> {
        let ok = !key.is_empty()
            && key.len() <= CALL_KEY_LEN_MAX
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok { Ok(Self(key.to_owned())) } else { Err(InvalidCallKey) }
    }

    /// The key of the order that the held transfer `id` pays: its 32 hex digits. The transfer
    /// id is itself derived from the customer's idempotency key, so a customer's retry reaches
    /// the same order, and the key is found again from the record after a crash.
    pub fn of_transfer(id: TransferId) -> Self {
        Self(id.as_uuid().simple().to_string())
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for CallKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CallKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        CallKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for CallKey {
    fn schema_name() -> Cow<'static, str> {
        "CallKey".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9-]{1,35}$",
            "description": "Our idempotency key with an outside party (ISO 20022 Max35Text)",
        })
    }
}

/// An ISO 20022 status reason code (`ExternalStatusReason1Code`: 1 to 4 upper-case letters or
/// digits, such as `AC01` incorrect account number or `AM04` insufficient funds).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReasonCode(String);

/// A reason code that is not 1 to 4 upper-case ASCII letters or digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a reason code is 1 to 4 upper-case letters or digits")]
pub struct InvalidReasonCode;

impl ReasonCode {
    /// The code `code`, if it is 1 to 4 upper-case ASCII letters or digits.
    pub fn parse(code: &str) -> Result<Self, InvalidReasonCode> {
        let ok = (1..=4).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if ok { Ok(Self(code.to_owned())) } else { Err(InvalidReasonCode) }
    }

    /// `AC01`: the account number is wrong or unknown.
    pub fn incorrect_account() -> Self {
        Self("AC01".to_owned())
    }

    /// `AC04`: the account is closed.
    pub fn closed_account() -> Self {
        Self("AC04".to_owned())
    }

    /// `AC06`: the account is blocked (frozen).
    pub fn blocked_account() -> Self {
        Self("AC06".to_owned())
    }

    /// `AM03`: the currency is not allowed.
    pub fn currency_not_allowed() -> Self {
        Self("AM03".to_owned())
    }

    /// `AM12`: the amount is invalid.
    pub fn invalid_amount() -> Self {
        Self("AM12".to_owned())
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ReasonCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReasonCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        ReasonCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ReasonCode {
    fn schema_name() -> Cow<'static, str> {
        "ReasonCode".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[A-Z0-9]{1,4}$",
            "description": "ISO 20022 status reason code, such as AC01 or AM04",
        })
    }
}

/// Why a call was never sent: definitely nothing happened at the party.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotSent {
    /// The circuit breaker is open: the party failed too often lately.
    #[error("circuit open")]
    CircuitOpen,
    /// No connection could be made (refused, no route, TLS handshake failed before the request).
    #[error("no connection")]
    NoConnection,
}

/// Why a call's outcome is unknown: the party may or may not have acted on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unknown {
    /// No answer within the call's timeout.
    #[error("timed out")]
    Timeout,
    /// The party answered 5xx on the last allowed attempt.
    #[error("server error {status}")]
    ServerError {
        /// The HTTP status (or the party's equivalent).
        status: u16,
    },
    /// The connection broke after the request was (maybe) sent.
    #[error("connection lost")]
    ConnectionLost,
    /// An answer came that we cannot read.
    #[error("malformed answer")]
    MalformedAnswer,
}

/// A refusal: the party answered that it does not accept the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused ({})", code.as_ref().map_or("no reason code", ReasonCode::as_str))]
pub struct Refusal {
    /// The party's reason code, when it gave one.
    pub code: Option<ReasonCode>,
}

/// How a call to an outside party failed; see the module documentation for what each allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Definitely not accepted (a 4xx-like answer): nothing happened there.
    #[error(transparent)]
    Refused(Refusal),
    /// Definitely not received: try again later with the same key.
    #[error("not sent: {0}")]
    NotSent(NotSent),
    /// Maybe acted on: reconcile with the same key; never resubmit under a new one.
    #[error("outcome unknown: {0}")]
    Unknown(Unknown),
}

/// Jittered exponential back-off, computed purely from an attempt number and a random value,
/// so that a schedule is replayable from its seed. The delay of attempt `n` (from 0) is drawn
/// from the upper half of `min(first_ms × 2ⁿ, max_ms)` ("equal jitter"): never zero, never
/// above `max_ms`, and spread so that many orders failing together do not all retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackOff {
    /// The cap of the first delay, in milliseconds (at least 2).
    pub first_ms: u64,
    /// The largest delay, in milliseconds (at least `first_ms`).
    pub max_ms: u64,
}

impl Default for BackOff {
    /// 1 s, doubling up to 10 minutes.
    fn default() -> Self {
        Self { first_ms: 1_000, max_ms: 600_000 }
    }
}

impl BackOff {
    /// Refuses bounds under which the delays would be zero or shrink.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.first_ms < 2 || self.max_ms < self.first_ms {
            return Err("back-off: first_ms must be at least 2 and max_ms at least first_ms");
        }
        Ok(())
    }

    /// The delay before attempt `attempt`, in milliseconds, with `random` any value from the
    /// injected generator: in `[cap / 2, cap]` where `cap = min(first_ms × 2^attempt, max_ms)`.
    pub fn delay_ms(&self, attempt: u32, random: u64) -> u64 {
        let cap = self.first_ms.checked_shl(attempt.min(63)).filter(|c| c >> attempt.min(63) == self.first_ms);
        let cap = cap.map_or(self.max_ms, |c| c.min(self.max_ms)).max(1);
        let half = cap / 2;
        half + random % (cap - half + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_keys_are_max35_ascii_and_derived_from_the_transfer() {
        let id = TransferId::new_v7();
        let key = CallKey::of_transfer(id);
        assert_eq!(key.as_str().len(), 32);
        assert_eq!(key, CallKey::of_transfer(id), "the same transfer, the same key");
        assert_eq!(CallKey::parse(key.as_str()), Ok(key.clone()));
        assert!(CallKey::parse(&"a".repeat(CALL_KEY_LEN_MAX)).is_ok());
        for bad in ["", &"a".repeat(CALL_KEY_LEN_MAX + 1), "a b", "é", "a/b"] {
            assert_eq!(CallKey::parse(bad), Err(InvalidCallKey), "{bad:?}");
        }
        let json = serde_json::to_string(&key).expect("json");
        assert_eq!(serde_json::from_str::<CallKey>(&json).expect("back"), key);
        assert!(serde_json::from_str::<CallKey>("\"a b\"").is_err());
    }

    #[test]
    fn reason_codes_are_up_to_four_upper_case_characters() {
        assert_eq!(ReasonCode::parse("AC01").expect("code").as_str(), "AC01");
        for bad in ["", "ac01", "AC012", "A 1"] {
            assert_eq!(ReasonCode::parse(bad), Err(InvalidReasonCode), "{bad:?}");
        }
    }

    #[test]
    fn back_off_doubles_within_its_bounds_and_jitters() {
        let b = BackOff { first_ms: 1_000, max_ms: 60_000 };
        assert_eq!(b.validate(), Ok(()));
        assert_eq!(b.delay_ms(0, 0), 500);
        assert_eq!(b.delay_ms(0, 500), 1_000);
        assert_eq!(b.delay_ms(0, 501), 500, "wraps within the window");
        assert_eq!(b.delay_ms(3, 0), 4_000);
        assert_eq!(b.delay_ms(3, u64::MAX), 4_000 + u64::MAX % 4_001);
        for attempt in [6, 7, 63, 64, 1_000, u32::MAX] {
            for random in [0, 1, 12_345, u64::MAX] {
                let d = b.delay_ms(attempt, random);
                assert!((30_000..=60_000).contains(&d), "attempt {attempt}: {d}");
            }
        }
        assert!(BackOff { first_ms: 1, max_ms: 10 }.validate().is_err());
        assert!(BackOff { first_ms: 10, max_ms: 5 }.validate().is_err());
    }
}
