//! The façade's path to another bank: [`Payments::pay`] with [`Payee::External`] and its
//! [`Payments::confirm`], over a [`ServiceStore`]. The flow is the internal one (the same
//! idempotency key, exemption rules, challenge and lock); what differs is the write: the hold,
//! the service record and their events in one command ([`ServiceStore::request`]) instead of a
//! posting, so that money is never held for the rail without the record that sends or releases
//! it.

use std::sync::Arc;

use super::rules::{IdempotencyKey, external_relation};
use super::{
    Confirmed, PayReceipt, Payee, Payment, PaymentError, PaymentRequest, Payments, awaiting_answer, transfer_id,
};
use crate::account::Account;
use crate::error::{Error, LedgerError, StoreError};
use crate::external::lifecycle::{self, InterbankDetails, NewExternalPayment};
use crate::external::{BankIbans, ExternalAccount, RailId};
use crate::hooks::PaymentOutcome;
use crate::ids::CustomerId;
use crate::sca::{Exemption, ScaAnswer, challenge_id, count_low_value, exemption};
use crate::security::{AuditKind, ChallengePurpose, ScaChallenge, ScaMethod};
use crate::service_record::ServiceRecord;
use crate::service_store::ServiceStore;
use crate::transfer::{Transfer, TransferKind};

/// The one rail payments to other banks take today.
const RAIL: RailId = RailId::SepaCreditTransfer;

/// What payments to other banks need: the store of their records (also the ledger's store) and
/// this bank's IBANs.
#[derive(Clone)]
pub(super) struct ExternalPayments {
    pub(super) store: Arc<dyn ServiceStore>,
    pub(super) bank: BankIbans,
}

/// Whether `existing`, the transfer under the payment's id, is `p`'s hold (placed while it
/// waited for SCA, or by the record): the same accounts, amount and remittance.
fn is_hold_of(p: &NewExternalPayment, existing: &Transfer) -> bool {
    existing.kind == TransferKind::Interbank
        && existing.debit_account == p.account
        && existing.credit_account == p.rail.clearing_account(p.amount.currency())
        && existing.amount == p.amount
        && existing.reference == p.remittance
}

/// Whether `record` is `p`'s: the same account, amount, payee and remittance.
fn is_record_of(p: &NewExternalPayment, record: &ServiceRecord) -> bool {
    let details = InterbankDetails::of(record);
    record.account_id == p.account
        && record.amount == p.amount
        && details.is_some_and(|d| d.rail == p.rail && d.creditor == p.creditor && d.remittance == p.remittance)
}

fn conflict(p: &NewExternalPayment) -> PaymentError {
    LedgerError::IdempotencyConflict { id: p.hold.to_string() }.into()
}

impl Payments {
    fn external(&self) -> Result<&ExternalPayments, PaymentError> {
        self.external.as_ref().ok_or(PaymentError::NotSupported("payments to other banks"))
    }

    /// [`Payments::pay`] to an account at another bank.
    ///
    /// An external payee is [`crate::sca::PayeeRelation::Other`] to every payer: beneficiaries
    /// hold only account numbers of this bank today, so no IBAN is trusted
    /// ([`external_relation`] is given none). The exemption is then decided by the one rule
    /// every payment takes ([`exemption`]): in practice low value, within the limits since
    /// the last SCA, counted and audited like an internal one.
    pub(super) async fn pay_external(
        &self,
        customer: CustomerId,
        from: &Account,
        key: &IdempotencyKey,
        payee: &ExternalAccount,
        request: &PaymentRequest,
    ) -> Result<PayReceipt, PaymentError> {
        let ext = self.external()?;
        if let Some(number) = ext.bank.account_number_of(&payee.iban) {
            return Err(PaymentError::OwnIban { number });
        }
        let p = NewExternalPayment {
            customer,
            account: from.id,
            hold: transfer_id(customer, key),
            amount: request.amount,
            creditor: payee.clone(),
            remittance: request.reference.clone(),
            rail: RAIL,
        };
        // Checked before anything is held: the rail's currency, the remittance information.
        lifecycle::request(&p, self.sca.now()).map_err(PaymentError::Rail)?;
        let relation = external_relation(payee, &[]);
        let _guard = self.sca.lock(customer).await;
        if let Some(receipt) = self.replay_external(ext, &p).await? {
            return Ok(receipt);
        }
        let store = self.sca.store();
        let mut state = store.security_state(customer).await?;
        let rules = self.sca.rules();
        if let Some(exempt) = exemption(rules, relation, &p.amount, &state) {
            let receipt = self.request_external(ext, &p, Some(exempt)).await?;
            if !receipt.replayed && exempt == Exemption::LowValue {
                count_low_value(rules, &mut state, &p.amount);
                store.put_security_state(customer, state).await?;
                let detail = serde_json::json!({ "rule": "low_value", "transfer": p.hold.to_string() });
                self.sca.audit(AuditKind::ScaExempted, Some(customer), detail).await?;
            }
            return Ok(receipt);
        }
        self.hold_for_sca(ext, &p).await
    }

    /// Needs SCA: a pending transfer holds the amount until the challenge expires (the same
    /// request the record's hold is, with a deadline), and the challenge names the payee.
    async fn hold_for_sca(&self, ext: &ExternalPayments, p: &NewExternalPayment) -> Result<PayReceipt, PaymentError> {
        let now = self.sca.now();
        let transition = lifecycle::request(p, now).map_err(PaymentError::Rail)?;
        let Some(mut hold) = transition.effects.into_iter().find_map(|e| match e {
            lifecycle::Effect::PlaceHold(h) => Some(h),
            _ => None,
        }) else {
            unreachable!("a new external payment places its hold")
        };
        hold.hold_until = Some(now + self.sca.rules().challenge_ttl());
        let transfer = match self.ledger.transfer(hold).await {
            Ok(receipt) if !receipt.replayed => receipt.transfer,
            Ok(_) | Err(Error::Ledger(LedgerError::IdempotencyConflict { .. })) => {
                return self.replay_external(ext, p).await?.ok_or_else(|| conflict(p));
            }
            Err(e) => {
                self.hooks().payment(PaymentOutcome::Rejected);
                return Err(e.into());
            }
        };
        self.hooks().ledger_changed();
        let (challenge, methods) = self.open_external_challenge(p.customer, &transfer, &p.creditor).await?;
        self.hooks().payment(PaymentOutcome::ScaRequired);
        Ok(PayReceipt {
            payment: Payment::Challenged { transfer, challenge: Box::new(challenge), methods },
            replayed: false,
        })
    }

    /// The one write of an exempt payment: hold, record and events ([`ServiceStore::request`]).
    async fn request_external(
        &self,
        ext: &ExternalPayments,
        p: &NewExternalPayment,
        exemption: Option<Exemption>,
    ) -> Result<PayReceipt, PaymentError> {
        let transition = lifecycle::request(p, self.sca.now()).map_err(PaymentError::Rail)?;
        match ext.store.request(transition).await {
            Ok(receipt) if !receipt.replayed => {
                self.hooks().ledger_changed();
                self.hooks().payment(PaymentOutcome::Submitted);
                let transfer = self.hold(p).await?;
                let payment = Payment::Submitted { transfer, service: Box::new(receipt.record), exemption };
                Ok(PayReceipt { payment, replayed: false })
            }
            Ok(_) | Err(Error::Ledger(LedgerError::IdempotencyConflict { .. })) => {
                self.replay_external(ext, p).await?.ok_or_else(|| conflict(p))
            }
            Err(e) => {
                self.hooks().payment(PaymentOutcome::Rejected);
                Err(e.into())
            }
        }
    }

    /// The hold of `p`, as it is now.
    async fn hold(&self, p: &NewExternalPayment) -> Result<Transfer, PaymentError> {
        self.ledger.store().transfer(p.hold).await?.ok_or(PaymentError::NotFound("transfer"))
    }

    /// The answer to a retry of `p`, if an earlier attempt with its key got anywhere: the
    /// record (submitted), or the hold waiting for SCA (challenged); a conflict when the key was
    /// used for another payment (another payee, amount, account or remittance, or an internal
    /// payment). `None`: nothing was written under the key.
    async fn replay_external(
        &self,
        ext: &ExternalPayments,
        p: &NewExternalPayment,
    ) -> Result<Option<PayReceipt>, PaymentError> {
        let Some(existing) = self.ledger.store().transfer(p.hold).await? else { return Ok(None) };
        if !is_hold_of(p, &existing) {
            return Err(conflict(p));
        }
        let challenge = self.sca.store().challenge(challenge_id(p.hold.as_uuid())).await?;
        let payment = match (ext.store.service_record(lifecycle::record_id(p.hold)).await?, challenge) {
            (Some(record), _) if !is_record_of(p, &record) => return Err(conflict(p)),
            (Some(record), challenge) => {
                // Authorized by an answered challenge, or exempt (only low value can be).
                let exemption = if challenge.is_some() { None } else { Some(Exemption::LowValue) };
                Payment::Submitted { transfer: existing, service: Box::new(record), exemption }
            }
            (None, Some(challenge)) => {
                let signed = matches!(&challenge.purpose, ChallengePurpose::ExternalPayment { payee, .. } if *payee == p.creditor);
                if !signed {
                    return Err(conflict(p));
                }
                let methods = self.sca.methods(p.customer, &challenge.purpose).await?;
                Payment::Challenged { transfer: existing, challenge: Box::new(challenge), methods }
            }
            // A crash between the pending transfer and its challenge: the challenge is made now.
            (None, None) => {
                let (challenge, methods) = self.open_external_challenge(p.customer, &existing, &p.creditor).await?;
                Payment::Challenged { transfer: existing, challenge: Box::new(challenge), methods }
            }
        };
        Ok(Some(PayReceipt { payment, replayed: true }))
    }

    /// Opens the challenge of a pending `transfer` to `payee` at another bank (a `bp-sca-v2`
    /// text), answerable while its hold lasts.
    async fn open_external_challenge(
        &self,
        customer: CustomerId,
        transfer: &Transfer,
        payee: &ExternalAccount,
    ) -> Result<(ScaChallenge, Vec<ScaMethod>), StoreError> {
        let purpose = ChallengePurpose::ExternalPayment {
            transfer_id: transfer.id,
            amount: transfer.amount,
            payee: payee.clone(),
        };
        self.sca.open(customer, purpose, transfer.hold_until.unwrap_or_else(|| self.sca.now())).await
    }

    /// [`Payments::confirm`] of a payment to another bank: the challenge must be linked to
    /// exactly the stored hold (its id and amount) and name the payee; the answer must sign
    /// that text (so another IBAN, name or amount fails it). Then the record is written, taking
    /// the pending transfer over as its hold (its deadline removed), in one command.
    pub(super) async fn confirm_external(
        &self,
        customer: CustomerId,
        transfer: &Transfer,
        challenge: ScaChallenge,
        answer: &ScaAnswer,
    ) -> Result<Confirmed, PaymentError> {
        let ext = self.external()?;
        // The payee is what the customer signs: the challenge is where it is kept until the
        // record is written, and the record is written with exactly it.
        let payee = match &challenge.purpose {
            ChallengePurpose::ExternalPayment { payee, .. } => payee.clone(),
            _ => return Err(PaymentError::ChallengeMismatch),
        };
        // `links_external`: the challenge's transfer and amount are the stored hold's.
        if !Payee::External(payee.clone()).links(&challenge, transfer) {
            return Err(PaymentError::ChallengeMismatch);
        }
        let _guard = self.sca.lock(customer).await;
        let transfer = self.ledger.store().transfer(transfer.id).await?.ok_or(PaymentError::NotFound("transfer"))?;
        awaiting_answer(&transfer)?;
        let answered = self.spend_answer(challenge, answer).await?;
        let p = NewExternalPayment {
            customer,
            account: transfer.debit_account,
            hold: transfer.id,
            amount: transfer.amount,
            creditor: payee,
            remittance: transfer.reference.clone(),
            rail: RAIL,
        };
        let transition = lifecycle::request(&p, self.sca.now()).map_err(PaymentError::Rail)?;
        let receipt = ext.store.request(transition).await?;
        self.hooks().ledger_changed();
        self.hooks().payment(PaymentOutcome::Submitted);
        let methods = self.sca.methods(customer, &answered.purpose).await?;
        let hold = self.hold(&p).await?;
        Ok(Confirmed { transfer: hold, challenge: answered, methods, service: Some(receipt.record) })
    }
}
