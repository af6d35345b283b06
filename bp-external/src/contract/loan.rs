//! The loan provider's HTTP contract: paths, problem types and the two JSON bodies (the
//! application, the decision), shared by [`crate::loan_http::HttpLoanProvider`] and the
//! simulator.
//!
//! - `POST {base}/loans/decisions` with an [`Application`] and our key in `Idempotency-Key` →
//!   `201` with a [`Decision`] (`200` with the very same decision when the key was seen with
//!   the same application; `409` `urn:bp:loans:key-conflict` with another); `4xx`
//!   `urn:bp:loans:refused` when it will not decide (an application it cannot read).
//! - `GET {base}/loans/decisions/{key}` → `200` with the [`Decision`] taken under our key, or
//!   `404` `urn:bp:loans:decision-not-found`: it never received an application under it.
//!
//! Amounts travel as bp's money (`{"amount":"10000.00","currency":"EUR"}`), the rate as a
//! decimal string, times in RFC 3339. Fields we do not know are ignored.

use bp_core::Timestamp;
use bp_core::external::ReasonCode;
use bp_core::external::loan::{LoanApplication, LoanDecision};
use bp_core::ids::CustomerId;
use bp_core::money::Money;
use bp_core::rate::Rate;
use serde::{Deserialize, Serialize};

/// The path of decisions under the provider's base URL: `POST {base}/loans/decisions`,
/// `GET {base}/loans/decisions/{key}`.
pub const DECISIONS_PATH: &str = "loans/decisions";

/// The problem type of a 4xx that refuses to decide (`CallError::Refused`).
pub const PROBLEM_REFUSED: &str = "urn:bp:loans:refused";

/// The problem type of a `GET {base}/loans/decisions/{key}` 404: no application was ever
/// received under this key. A 404 without it (a wrong path) is not taken as a miss.
pub const PROBLEM_DECISION_NOT_FOUND: &str = "urn:bp:loans:decision-not-found";

/// The problem type of a 409: the key was used before with another application.
pub const PROBLEM_KEY_CONFLICT: &str = "urn:bp:loans:key-conflict";

/// What the provider is asked to decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// The applicant: the bank's id of the customer (no name, no document).
    pub customer: CustomerId,
    /// The principal asked for.
    pub amount: Money,
    /// The term asked for, in monthly instalments.
    pub term_months: u32,
    /// What the loan is for, in the customer's words.
    pub purpose: String,
    /// When the customer applied (RFC 3339).
    pub requested_at: Timestamp,
}

/// The provider's decision, tagged by `decision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Approved: an offer.
    Approved {
        /// The annual interest rate, a decimal string (`"0.059"` is 5.9%; `"0"` allowed).
        annual_rate: Rate,
        /// The fee, in the loan's currency.
        fee: Money,
        /// The term offered, in monthly instalments.
        term_months: u32,
    },
    /// Declined.
    Declined {
        /// The provider's reason code, if it gives one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<ReasonCode>,
    },
}

impl From<&LoanApplication> for Application {
    fn from(a: &LoanApplication) -> Self {
        Self {
            customer: a.customer,
            amount: a.amount,
            term_months: a.term_months,
            purpose: a.purpose.clone(),
            requested_at: a.requested_at,
        }
    }
}

impl From<Decision> for LoanDecision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Approved { annual_rate, fee, term_months } => {
                LoanDecision::Approved { annual_rate, fee, term_months }
            }
            Decision::Declined { reason } => LoanDecision::Declined { reason },
        }
    }
}
