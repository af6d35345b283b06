//! The façade's path abroad: [`Payments::quote_international`], then
//! [`Payments::pay_international`] with the quote the customer accepted, then
//! [`Payments::confirm`]. The flow is the external one ([`super::external`]) with the quote in
//! the middle:
//!
//! 1. The quote is read again from the provider by id and must be exactly the one shown
//!    ([`fx::check_accepted`]): unknown, changed or expired, it is refused and nothing is held.
//! 2. A payment abroad always takes SCA (no exemption applies: the customer must see the rate
//!    and the fee and sign them). The customer's legs (source amount and fee) are held until
//!    the challenge's or the quote's expiry, whichever comes first, and the challenge's
//!    `bp-sca-v3` text names both amounts, the fee, the rate and the payee.
//! 3. [`Payments::confirm`] checks the quote has not expired, spends the answer, takes the quote
//!    for this payment alone (a quote converts once: another payment with it is refused, from
//!    any process, and its legs are released) and writes the record with every leg in one
//!    command ([`ServiceStore::request`]), taking the held legs over; the worker then sends the
//!    order to the correspondent rail.

use std::sync::Arc;

use super::external::ExternalPayments;
use super::rules::IdempotencyKey;
use super::{Confirmed, PayReceipt, Payment, PaymentError, Payments, awaiting_answer, transfer_id};
use crate::error::{Error, LedgerError, StoreError, StoreErrorKind};
use crate::external::fx::{self, FxProvider, FxQuote, InternationalDetails, NewInternationalPayment, QuoteRequest};
use crate::external::lifecycle::record_id;
use crate::external::{CallKey, ExternalAccount};
use crate::hooks::PaymentOutcome;
use crate::ids::{AccountId, CustomerId, TransferId};
use crate::money::{Currency, Money};
use crate::sca::{Closed, ScaAnswer, challenge_id, links_international};
use crate::security::{ChallengePurpose, ScaChallenge, ScaMethod};
use crate::service_record::ServiceRecord;
use crate::transfer::{Transfer, TransferRequest, TransferState, VoidReason};
use crate::transient::{Transient, TransientKind};

/// A payment abroad a customer asks for, with the quote they accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternationalRequest {
    /// The payer's account, in the quote's source currency.
    pub from_account: AccountId,
    /// The quote, exactly as it was shown.
    pub quote: FxQuote,
    /// The payee, paid in the quote's target currency.
    pub payee: ExternalAccount,
    /// Remittance information (at most 140 characters).
    pub reference: Option<String>,
}

/// Whether `existing` is `p`'s first leg: the same account, amount and remittance.
fn is_first_leg_of(p: &NewInternationalPayment, existing: &Transfer) -> bool {
    fx::legs(p).first().is_some_and(|leg| {
        existing.kind == leg.kind
            && existing.debit_account == leg.debit_account
            && existing.credit_account == leg.credit_account
            && existing.amount == leg.amount
            && existing.reference == leg.reference
    })
}

/// Whether `record` is `p`'s: the same account, quote, payee and remittance.
fn is_record_of(p: &NewInternationalPayment, record: &ServiceRecord) -> bool {
    record.account_id == p.account
        && InternationalDetails::of(record)
            .is_some_and(|d| d.quote == p.quote && d.creditor == p.creditor && d.remittance == p.remittance)
}

fn conflict(p: &NewInternationalPayment) -> PaymentError {
    LedgerError::IdempotencyConflict { id: p.hold.to_string() }.into()
}

impl Payments {
    /// The flow with payments abroad, converting through `provider`. Needs
    /// [`Payments::with_external`] as well (the records and the rail's worker are the same);
    /// without it, or without this, payments abroad are [`PaymentError::NotSupported`].
    pub fn with_fx(self, provider: Arc<dyn FxProvider>) -> Self {
        Self { fx: Some(provider), ..self }
    }

    fn fx(&self) -> Result<(&ExternalPayments, &dyn FxProvider), PaymentError> {
        const WHAT: &str = "payments abroad";
        let ext = self.external.as_ref().ok_or(PaymentError::NotSupported(WHAT))?;
        let fx = self.fx.as_deref().ok_or(PaymentError::NotSupported(WHAT))?;
        Ok((ext, fx))
    }

    /// A quote for converting `source` from `customer`'s account `from` into `target`: the
    /// provider's rate and fee, every amount computed exactly ([`FxQuote::of`]). Nothing is held;
    /// the quote is accepted by paying with it before it expires.
    pub async fn quote_international(
        &self,
        customer: CustomerId,
        from: AccountId,
        source: Money,
        target: Currency,
    ) -> Result<FxQuote, PaymentError> {
        let (_, provider) = self.fx()?;
        let account = self.own_account(customer, from).await?;
        if account.currency != source.currency() {
            return Err(LedgerError::CurrencyMismatch {
                account: account.id,
                expected: account.currency,
                actual: source.currency(),
            }
            .into());
        }
        if !source.is_positive() {
            return Err(PaymentError::Quote(fx::QuoteError::Amount));
        }
        if source.currency() == target {
            return Err(PaymentError::Quote(fx::QuoteError::SameCurrency));
        }
        let request = QuoteRequest { source, target_currency: target };
        let key = CallKey::of_transfer(TransferId::new_v7());
        let quote = provider.quote(&request, &key).await.map_err(PaymentError::Provider)?;
        let quote = FxQuote::of(&quote).map_err(PaymentError::Quote)?;
        if !quote.answers(&request) {
            return Err(PaymentError::Quote(fx::QuoteError::Provider("it quotes another amount or currency")));
        }
        Ok(quote)
    }

    /// Pays abroad with an accepted quote: the customer's legs are held and a challenge naming
    /// both amounts, the fee, the rate and the payee is opened ([`Payment::Challenged`]); once
    /// answered ([`Payments::confirm`]) the payment goes to the rail. A retry with the same key
    /// answers as the first attempt did, with the payment as it is now.
    pub async fn pay_international(
        &self,
        customer: CustomerId,
        key: &IdempotencyKey,
        request: &InternationalRequest,
    ) -> Result<PayReceipt, PaymentError> {
        let (ext, provider) = self.fx()?;
        if let Some(number) = ext.bank.account_number_of(&request.payee.iban) {
            return Err(PaymentError::OwnIban { number });
        }
        let from = self.own_account(customer, request.from_account).await?;
        let p = NewInternationalPayment {
            customer,
            account: from.id,
            hold: transfer_id(customer, key),
            quote: request.quote.clone(),
            creditor: request.payee.clone(),
            remittance: request.reference.clone(),
        };
        fx::validate(&p).map_err(PaymentError::Rail)?;
        let _guard = self.sca.lock(customer).await;
        if let Some(receipt) = self.replay_international(ext, &p).await? {
            return Ok(receipt);
        }
        let current = provider.quote_by_id(&p.quote.id).await.map_err(PaymentError::Provider)?;
        fx::check_accepted(&p.quote, current.as_ref(), self.sca.now()).map_err(PaymentError::Quote)?;
        // Refused before anything is held when another payment took the quote already;
        // `confirm_international` takes it for this one.
        if self.quote_taken_by_another(&p).await? {
            return Err(PaymentError::Quote(fx::QuoteError::Used));
        }
        // Refused before anything is held when the amount and the fee together do not fit;
        // `hold_customer_legs` still releases what it held if a payment in between takes the
        // room.
        let payer = self.own_account(customer, p.account).await?;
        crate::rules::check_funds(&payer, p.quote.debit.amount_minor())?;
        let legs = self.hold_customer_legs(&p).await?;
        self.hooks().ledger_changed();
        let first = legs.into_iter().next().unwrap_or_else(|| unreachable!("a payment abroad has a first leg"));
        let (challenge, methods) = self.open_international_challenge(&p, &first).await?;
        self.hooks().payment(PaymentOutcome::ScaRequired);
        Ok(PayReceipt {
            payment: Payment::Challenged { transfer: first, challenge: Box::new(challenge), methods },
            replayed: false,
        })
    }

    /// The customer's legs of `p` (what is converted, the fee), pending until the challenge or
    /// the quote expires, whichever comes first. When one cannot be held (the fee does not fit
    /// the balance), the others are released and nothing stays held.
    async fn hold_customer_legs(&self, p: &NewInternationalPayment) -> Result<Vec<Transfer>, PaymentError> {
        let until = (self.sca.now() + self.sca.rules().challenge_ttl()).min(p.quote.expires_at);
        let mut held = Vec::new();
        for leg in fx::legs(p).into_iter().filter(|l| l.debit_account == p.account) {
            let pending = TransferRequest { hold_until: Some(until), ..leg };
            match self.ledger.transfer(pending).await {
                Ok(receipt) => held.push(receipt.transfer),
                Err(e) => {
                    for t in &held {
                        self.ledger.void_pending(t.id, VoidReason::Cancelled).await?;
                    }
                    self.hooks().payment(PaymentOutcome::Rejected);
                    return Err(e.into());
                }
            }
        }
        Ok(held)
    }

    /// Opens the `bp-sca-v3` challenge of `p`, whose first leg is `first`, answerable while its
    /// legs are held.
    async fn open_international_challenge(
        &self,
        p: &NewInternationalPayment,
        first: &Transfer,
    ) -> Result<(ScaChallenge, Vec<ScaMethod>), StoreError> {
        let purpose = ChallengePurpose::InternationalPayment {
            transfer_id: first.id,
            quote: p.quote.clone(),
            payee: p.creditor.clone(),
        };
        self.sca.open(p.customer, purpose, first.hold_until.unwrap_or_else(|| self.sca.now())).await
    }

    /// The answer to a retry of `p`, if an earlier attempt with its key got anywhere; a
    /// conflict when the key was used for another payment. `None`: nothing was written.
    async fn replay_international(
        &self,
        ext: &ExternalPayments,
        p: &NewInternationalPayment,
    ) -> Result<Option<PayReceipt>, PaymentError> {
        let Some(existing) = self.ledger.store().transfer(p.hold).await? else { return Ok(None) };
        if !is_first_leg_of(p, &existing) {
            return Err(conflict(p));
        }
        let challenge = self.sca.store().challenge(challenge_id(p.hold.as_uuid())).await?;
        let payment = match (ext.store.service_record(record_id(p.hold)).await?, challenge) {
            (Some(record), _) if !is_record_of(p, &record) => return Err(conflict(p)),
            (Some(record), _) => Payment::Submitted { transfer: existing, service: Box::new(record), exemption: None },
            (None, Some(challenge)) => {
                if !links_international(&challenge, &existing, &p.quote, &p.creditor) {
                    return Err(conflict(p));
                }
                let methods = self.sca.methods(p.customer, &challenge.purpose).await?;
                Payment::Challenged { transfer: existing, challenge: Box::new(challenge), methods }
            }
            // A crash between the legs and the challenge: the legs expire by themselves; the
            // customer pays again under a new key.
            (None, None) => return Err(PaymentError::Sca(Closed::PaymentEnded.into())),
        };
        Ok(Some(PayReceipt { payment, replayed: true }))
    }

    /// [`Payments::confirm`] of a payment abroad: the challenge must be linked to exactly the
    /// stored first leg and name the quote and payee; the quote must not have expired (then every
    /// held leg is released at once); the answer must sign that text. Then the record is written
    /// with every leg, taking the held ones over, in one command.
    pub(super) async fn confirm_international(
        &self,
        customer: CustomerId,
        transfer: &Transfer,
        challenge: ScaChallenge,
        answer: &ScaAnswer,
    ) -> Result<Confirmed, PaymentError> {
        let (ext, _) = self.fx()?;
        let (quote, payee) = match &challenge.purpose {
            ChallengePurpose::InternationalPayment { quote, payee, .. } => (quote.clone(), payee.clone()),
            _ => return Err(PaymentError::ChallengeMismatch),
        };
        if !links_international(&challenge, transfer, &quote, &payee) {
            return Err(PaymentError::ChallengeMismatch);
        }
        let _guard = self.sca.lock(customer).await;
        let transfer = self.ledger.store().transfer(transfer.id).await?.ok_or(PaymentError::NotFound("transfer"))?;
        awaiting_answer(&transfer)?;
        let p = NewInternationalPayment {
            customer,
            account: transfer.debit_account,
            hold: transfer.id,
            quote,
            creditor: payee,
            remittance: transfer.reference.clone(),
        };
        if let Err(expired) = fx::check_not_expired(&p.quote, self.sca.now()) {
            self.release_customer_legs(&p).await?;
            return Err(PaymentError::Quote(expired));
        }
        let answered = self.spend_answer(challenge, answer).await?;
        // Another payment took the quote: this one's legs are released. (A store error leaves
        // them held: the confirm's retry goes on from the answer already given.)
        if let Err(used @ PaymentError::Quote(fx::QuoteError::Used)) = self.take_quote(&p).await? {
            self.release_customer_legs(&p).await?;
            return Err(used);
        }
        let transition = fx::request(&p, self.sca.now()).map_err(PaymentError::Rail)?;
        let receipt = ext.store.request(transition).await?;
        self.hooks().ledger_changed();
        self.hooks().payment(PaymentOutcome::Submitted);
        let methods = self.sca.methods(customer, &answered.purpose).await?;
        let first = self.ledger.store().transfer(p.hold).await?.ok_or(PaymentError::NotFound("transfer"))?;
        Ok(Confirmed { transfer: first, challenge: answered, methods, service: Some(receipt.record) })
    }

    /// Takes `p`'s quote for `p`, once for every payment: the mark that it was taken
    /// ([`TransientKind::FxQuoteUsed`], naming `p`'s first leg) is put in the security store,
    /// which refuses a second one of the same quote from any process. `Ok` when `p` holds it
    /// (now, or since a retry's earlier attempt); `Ok(Err(`[`fx::QuoteError::Used`]`))` when
    /// another payment does; `Err` when the store could not say. The mark lasts as long as the quote: after that the quote is refused as
    /// expired.
    async fn take_quote(&self, p: &NewInternationalPayment) -> Result<Result<(), PaymentError>, StoreError> {
        let mark = Transient {
            kind: TransientKind::FxQuoteUsed,
            key: fx::quote_key(&p.quote.id),
            value: p.hold.as_uuid().as_bytes().to_vec(),
            expires_at: p.quote.expires_at,
            spent: false,
        };
        match self.sca.store().put_transient(mark).await {
            Ok(()) => Ok(Ok(())),
            Err(e) if e.kind() == StoreErrorKind::Conflict => match self.quote_taken_by_another(p).await? {
                true => Ok(Err(PaymentError::Quote(fx::QuoteError::Used))),
                false => Ok(Ok(())),
            },
            Err(e) => Err(e),
        }
    }

    /// Whether a payment other than `p` took `p`'s quote.
    async fn quote_taken_by_another(&self, p: &NewInternationalPayment) -> Result<bool, StoreError> {
        let mark = self.sca.store().transient(TransientKind::FxQuoteUsed, fx::quote_key(&p.quote.id)).await?;
        Ok(mark.is_some_and(|m| m.value != p.hold.as_uuid().as_bytes()))
    }

    /// Releases the customer's legs of `p` that are still pending with a deadline.
    async fn release_customer_legs(&self, p: &NewInternationalPayment) -> Result<(), PaymentError> {
        for leg in fx::legs(p).into_iter().filter(|l| l.debit_account == p.account) {
            let Some(t) = self.ledger.store().transfer(leg.id).await? else { continue };
            if t.state == TransferState::Pending && t.hold_until.is_some() {
                match self.ledger.void_pending(t.id, VoidReason::Cancelled).await {
                    // Released already by the sweeper, in between.
                    Ok(_) | Err(Error::Ledger(LedgerError::InvalidTransition { .. })) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.hooks().ledger_changed();
        Ok(())
    }
}
