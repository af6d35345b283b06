//! The façade's part in accepting a loan: the strong customer authentication. Accepting an
//! offer pays the principal into the customer's account and opens a debt, so it takes a
//! challenge whose `bp-sca-v4` text names the principal, the account, the term, the rate, the
//! instalment, the interest, the fee and the total ([`crate::sca::signing_message`]):
//!
//! 1. [`Payments::challenge_loan_offer`] opens (or renews, while open) the loan's one challenge,
//!    answerable until the offer expires at the latest.
//! 2. [`Payments::confirm_loan_offer`] checks the challenge still names exactly the loan's
//!    offer (dynamic linking) and spends the answer; the caller then applies
//!    [`LoanInput::Accept`](crate::external::loan::LoanInput::Accept) to the record, which
//!    disburses. An answer spent before a crash still accepts: confirming again goes ahead.
//!
//! The loan's record is read by the caller (from its [`crate::service_store::ServiceStore`]) and
//! handed in; what is checked here is whose it is and what its challenge says.

use super::{PaymentError, Payments};
use crate::external::loan::{self, LoanDetails, LoanOffer, LoanTransitionError};
use crate::ids::CustomerId;
use crate::sca::{Closed, ScaAnswer, challenge_id, links_loan};
use crate::security::{ChallengePurpose, ChallengeState, ScaChallenge, ScaMethod};
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};

/// A loan's offer waiting for the SCA that accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoanChallenge {
    /// The challenge to answer ([`Payments::confirm_loan_offer`]).
    pub challenge: ScaChallenge,
    /// How it may be answered (none: the customer must register a device first).
    pub methods: Vec<ScaMethod>,
}

impl Payments {
    /// `customer`'s loan `record` with its offer; another customer's is not found.
    fn own_loan_offer(&self, customer: CustomerId, record: &ServiceRecord) -> Result<LoanOffer, PaymentError> {
        if record.kind != ServiceKind::Loan || record.customer_id != customer {
            return Err(PaymentError::NotFound("loan"));
        }
        if record.status != ServiceStatus::Offered {
            return Err(PaymentError::Loan(LoanTransitionError::NotOffered { status: record.status }));
        }
        LoanDetails::of(record)
            .and_then(|d| d.offer)
            .ok_or(PaymentError::Loan(LoanTransitionError::NotALoan("offered without an offer")))
    }

    /// Opens the challenge that accepts `customer`'s offered loan `record` (or renews the open
    /// one), answerable for the challenge's time, and never after the offer expires. Nothing
    /// else changes: the loan is accepted by [`Payments::confirm_loan_offer`].
    pub async fn challenge_loan_offer(
        &self,
        customer: CustomerId,
        record: &ServiceRecord,
    ) -> Result<LoanChallenge, PaymentError> {
        let offer = self.own_loan_offer(customer, record)?;
        let now = self.sca.now();
        offer.open_at(now).map_err(PaymentError::Loan)?;
        let account = self.own_account(customer, record.account_id).await?;
        let _guard = self.sca.lock(customer).await;
        // One challenge per loan: answered, the acceptance is under way (confirm again to
        // finish it); failed, the offer cannot be accepted any more.
        if let Some(existing) = self.sca.store().challenge(challenge_id(record.id.as_uuid())).await? {
            match existing.state {
                ChallengeState::Open => {}
                ChallengeState::Answered { .. } => return Err(Closed::Answered.into()),
                ChallengeState::Failed => return Err(Closed::Failed.into()),
            }
        }
        let until = (now + self.sca.rules().challenge_ttl()).min(offer.expires_at);
        let purpose = ChallengePurpose::LoanAcceptance {
            loan_id: record.id,
            amount: record.amount,
            account: account.number,
            offer,
        };
        let (challenge, methods) = self.sca.open(customer, purpose, until).await?;
        Ok(LoanChallenge { challenge, methods })
    }

    /// Checks and spends `answer` to the challenge of `customer`'s loan `record`, which must
    /// still be offered under exactly the offer the challenge names. Then the caller accepts
    /// the loan. A loan accepted already, under an answered challenge, is answered `Ok` again
    /// (a retry); an answer spent before the acceptance was written (a crash in between) still
    /// lets it go ahead.
    pub async fn confirm_loan_offer(
        &self,
        customer: CustomerId,
        record: &ServiceRecord,
        answer: &ScaAnswer,
    ) -> Result<ScaChallenge, PaymentError> {
        if record.kind != ServiceKind::Loan || record.customer_id != customer {
            return Err(PaymentError::NotFound("loan"));
        }
        let challenge = self.sca.challenge_of(customer, challenge_id(record.id.as_uuid())).await?;
        if loan::accepted(record.status) && matches!(challenge.state, ChallengeState::Answered { .. }) {
            return Ok(challenge);
        }
        let offer = self.own_loan_offer(customer, record)?;
        let account = self.own_account(customer, record.account_id).await?;
        if !links_loan(&challenge, record, &offer, account.number) {
            return Err(PaymentError::ChallengeMismatch);
        }
        let _guard = self.sca.lock(customer).await;
        self.spend_answer(challenge, answer).await
    }
}
