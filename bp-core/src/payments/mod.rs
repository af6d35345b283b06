//! [`Payments`]: the payment flow of the bank, written once for every caller — the reference
//! server, an integrator's service, the mobile SDK's server side.
//!
//! - [`Payments::pay`] (customer, idempotency key, request) posts a payment at once when an
//!   SCA exemption covers it, or holds its amount in a pending transfer and opens a challenge
//!   dynamically linked to it (amount, currency, payee, transfer). The transfer id is derived
//!   from the customer and the key; a retry with the same key and request gets the first
//!   answer again (with the transfer as it is now), another request with the same key an
//!   idempotency conflict, and no retry moves money twice.
//! - [`Payments::confirm`] checks the answer (a device signature of the challenge's exact text,
//!   or a TOTP code where the rules allow one), checks again that the challenge is linked to
//!   exactly this transfer, and posts it.
//! - Beneficiaries: trusting a payee takes an answered challenge; payments to it are then
//!   exempt.
//!
//! - Payments to another bank ([`Payee::External`]: IBAN, name, BIC) take the same flow over a
//!   [`ServiceStore`] ([`Payments::with_external`]): exempt, the hold, the service record and
//!   their events are written in one command ([`ServiceStore::request`]); otherwise a pending
//!   transfer holds the amount while a challenge signed as `bp-sca-v2` text (amount, currency,
//!   IBAN, name, BIC) is answered, and [`Payments::confirm`] then writes the record, taking the
//!   pending transfer over as its hold. Either way the answer is [`Payment::Submitted`]: pending
//!   at the rail, with the record's id.
//!
//! The rules are [`crate::sca`]'s and [`rules`]'s pure functions; this module reads the state
//! they decide on and writes their effects.

mod external;
mod international;
mod loans;
pub mod rules;

use std::sync::Arc;

use crate::account::Account;
use crate::account_number::AccountNumber;
use crate::api::NewTransfer;
use crate::error::{Error, LedgerError, StoreError};
use crate::external::lifecycle::RequestError;
use crate::external::{BankIbans, ExternalAccount};
use crate::hooks::{Hooks, PaymentOutcome};
use crate::ids::{AccountId, BeneficiaryId, CustomerId, TransferId};
use crate::money::Money;
use crate::sca::{
    Closed, Exemption, PayeeRelation, Sca, ScaAnswer, ScaError, Trust, challenge_id, count_low_value, limits, links,
    links_external, low_value_allows, standing_exemption,
};
use crate::security::{
    AuditKind, Beneficiary, BeneficiaryState, ChallengePurpose, ChallengeState, ScaChallenge, ScaMethod,
};
use crate::service::Ledger;
use crate::service_record::ServiceRecord;
use crate::service_store::ServiceStore;
use crate::store::Store;
use crate::transfer::{Transfer, TransferKind, TransferRequest, TransferState};

pub use international::InternationalRequest;
pub use loans::LoanChallenge;
use rules::InternalPayment;
pub use rules::{IDEMPOTENCY_KEY_LEN_MAX, IdempotencyKey, InvalidIdempotencyKey, external_relation, transfer_id};

/// Whom a payment goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payee {
    /// A customer account of this bank, by number.
    Account(AccountNumber),
    /// An account at another bank, paid over a rail ([`crate::external`]).
    External(ExternalAccount),
}

impl Payee {
    /// Dynamic linking: whether `challenge` authorizes exactly `transfer` to this payee.
    pub fn links(&self, challenge: &ScaChallenge, transfer: &Transfer) -> bool {
        match self {
            Payee::Account(number) => links(challenge, transfer, *number),
            Payee::External(account) => links_external(challenge, transfer, account),
        }
    }
}

/// A payment a customer asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRequest {
    /// The payer's account the money leaves.
    pub from_account: AccountId,
    /// Whom it goes to.
    pub payee: Payee,
    /// Amount and currency.
    pub amount: Money,
    /// Free text shown to both sides.
    pub reference: Option<String>,
}

impl From<&NewTransfer> for PaymentRequest {
    fn from(t: &NewTransfer) -> Self {
        Self {
            from_account: t.from_account,
            payee: Payee::Account(t.to_account_number),
            amount: t.amount,
            reference: t.reference.clone(),
        }
    }
}

/// Where a payment stands after [`Payments::pay`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payment {
    /// Posted without SCA, under `exemption`.
    Posted {
        /// The transfer.
        transfer: Transfer,
        /// Why no SCA was needed.
        exemption: Exemption,
    },
    /// Needs SCA: the transfer holds its amount (pending) until `challenge` is answered with
    /// one of `methods` ([`Payments::confirm`]) or expires. A retry reports the transfer as it
    /// is now, posted once confirmed.
    Challenged {
        /// The transfer.
        transfer: Transfer,
        /// The challenge to answer (boxed: it is much larger than a posted payment's answer).
        challenge: Box<ScaChallenge>,
        /// How it may be answered (none: the customer must register a device first).
        methods: Vec<ScaMethod>,
    },
    /// A payment to another bank, handed to the rail: `transfer` holds its amount (without a
    /// deadline) and `service` (status `requested` when written) is the payment at the rail,
    /// which the rail's worker sends and which ends when the rail decides. An HTTP layer answers
    /// `202 Accepted` with `service.id`. A retry with the same key answers this again, with
    /// the transfer and the record as they are now, once the record exists (exempt at once, or
    /// after [`Payments::confirm`]); before, it answers [`Payment::Challenged`].
    Submitted {
        /// The hold, as it is now (pending until the rail decides).
        transfer: Transfer,
        /// The service record, as it is now (boxed: it is much larger than a transfer).
        service: Box<ServiceRecord>,
        /// Why no SCA was needed; `None` when an answered challenge authorized it.
        exemption: Option<Exemption>,
    },
}

/// The answer to [`Payments::pay`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayReceipt {
    /// Where the payment stands.
    pub payment: Payment,
    /// Whether an earlier attempt with the same key made it (nothing moved this time).
    pub replayed: bool,
}

/// The answer to [`Payments::confirm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmed {
    /// The posted transfer; for a payment to another bank, its hold (pending, no deadline any
    /// more) until the rail decides.
    pub transfer: Transfer,
    /// The answered challenge.
    pub challenge: ScaChallenge,
    /// How it could be answered.
    pub methods: Vec<ScaMethod>,
    /// For a payment to another bank: its service record, written by this confirmation (the
    /// payment is then pending at the rail: an HTTP layer answers `202` with its id).
    pub service: Option<ServiceRecord>,
}

/// A beneficiary waiting for the SCA that trusts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeneficiaryChallenge {
    /// The beneficiary, pending.
    pub beneficiary: Beneficiary,
    /// The challenge to answer ([`Payments::confirm_beneficiary`]).
    pub challenge: ScaChallenge,
    /// How it may be answered.
    pub methods: Vec<ScaMethod>,
}

/// A payment request the flow refuses, or a failed store. Nothing moved, except that a wrong
/// SCA answer is counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    /// A rule of the ledger refused it (funds, account status, currency, the same key used for
    /// another payment, ...).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Strong customer authentication refused it.
    #[error(transparent)]
    Sca(ScaError),
    /// No such record of this customer (another customer's are not found either).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No customer account of this bank has the payee's number.
    #[error("no account of this bank has this number")]
    UnknownPayee,
    /// The challenge does not authorize exactly this transfer (dynamic linking).
    #[error("the challenge does not match this transfer")]
    ChallengeMismatch,
    /// This kind of payment is not set up: payments to other banks need
    /// [`Payments::with_external`].
    #[error("{0} are not supported here")]
    NotSupported(&'static str),
    /// The rail does not take this payment (another currency than the rail's, remittance
    /// information too long): nothing was held.
    #[error(transparent)]
    Rail(RequestError),
    /// The payee's IBAN is one of this bank's accounts: pay account `number` as an account of
    /// this bank ([`Payee::Account`]), not over the rail. Nothing was held.
    #[error("this IBAN is account {number} of this bank: pay it as an account of this bank")]
    OwnIban {
        /// The account the IBAN names.
        number: AccountNumber,
    },
    /// The FX quote cannot be given or accepted (unknown, changed, expired, or not one the
    /// bank offers): nothing was held.
    #[error(transparent)]
    Quote(crate::external::fx::QuoteError),
    /// The loan cannot be accepted as it is (not offered, its offer expired): nothing changed.
    #[error(transparent)]
    Loan(crate::external::loan::LoanTransitionError),
    /// The FX provider did not answer, or refused: nothing was held; ask again later.
    #[error("the FX provider: {0}")]
    Provider(crate::external::CallError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ScaError> for PaymentError {
    fn from(e: ScaError) -> Self {
        match e {
            ScaError::Store(s) => PaymentError::Store(s),
            ScaError::NotFound(what) => PaymentError::NotFound(what),
            other => PaymentError::Sca(other),
        }
    }
}

impl From<Closed> for PaymentError {
    fn from(c: Closed) -> Self {
        PaymentError::Sca(ScaError::Closed(c))
    }
}

impl From<Error> for PaymentError {
    fn from(e: Error) -> Self {
        match e {
            Error::Ledger(l) => PaymentError::Ledger(l),
            Error::Store(s) => PaymentError::Store(s),
        }
    }
}

/// A payment on its way to the ledger.
#[derive(Debug)]
struct Order {
    customer: CustomerId,
    id: TransferId,
    payment: InternalPayment,
    payee_number: AccountNumber,
    relation: PayeeRelation,
}

impl Order {
    fn request(&self, hold_until: Option<crate::Timestamp>) -> TransferRequest {
        TransferRequest {
            id: self.id,
            kind: TransferKind::Internal,
            debit_account: self.payment.from,
            credit_account: self.payment.to,
            amount: self.payment.amount,
            reference: self.payment.reference.clone(),
            hold_until,
        }
    }
}

/// What submitting to the ledger gave.
enum Submitted {
    /// A new transfer.
    New(Transfer),
    /// An earlier attempt's answer (boxed: much larger than a transfer).
    Replay(Box<PayReceipt>),
}

impl Submitted {
    fn posted(self, exemption: Exemption) -> PayReceipt {
        match self {
            Submitted::New(transfer) => {
                PayReceipt { payment: Payment::Posted { transfer, exemption }, replayed: false }
            }
            Submitted::Replay(receipt) => *receipt,
        }
    }
}

/// Whether payment `transfer` still waits for its SCA answer: pending with its deadline. Pending
/// without one it was handed to an outside party, and posted it was confirmed: either way the
/// answer was given; voided or failed, the payment ended.
fn awaiting_answer(transfer: &Transfer) -> Result<(), Closed> {
    match transfer.state {
        TransferState::Pending if transfer.awaits_external_party() => Err(Closed::PaymentConfirmed),
        TransferState::Pending => Ok(()),
        TransferState::Posted => Err(Closed::PaymentConfirmed),
        TransferState::Voided | TransferState::Failed => Err(Closed::PaymentEnded),
    }
}

/// The payment flow over a ledger and strong customer authentication (and, for payments to
/// other banks, a service store: [`Payments::with_external`]). Cloning shares it.
#[derive(Clone)]
pub struct Payments {
    ledger: Ledger<dyn Store>,
    sca: Sca,
    external: Option<external::ExternalPayments>,
    fx: Option<Arc<dyn crate::external::fx::FxProvider>>,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments").field("sca", &self.sca).finish_non_exhaustive()
    }
}

impl Payments {
    /// The flow over `ledger`, authenticating with `sca` (whose store, clock, rules and hooks
    /// it uses).
    pub fn new(ledger: Ledger<dyn Store>, sca: Sca) -> Self {
        Self { ledger, sca, external: None, fx: None }
    }

    /// The flow with payments to other banks, over `store`, which becomes the ledger's store
    /// too (the hold placed while a payment waits for SCA and the record that takes it over
    /// must be in one store, so there is no second one to get wrong); `bank` tells which IBANs
    /// are this bank's own accounts (refused as payees: [`PaymentError::OwnIban`]). The rail is
    /// SEPA credit transfer, the one there is. Without this, [`Payments::pay`] refuses
    /// [`Payee::External`] with [`PaymentError::NotSupported`].
    pub fn with_external(self, store: Arc<dyn ServiceStore>, bank: BankIbans) -> Self {
        let ledger: Arc<dyn Store> = store.clone();
        Self { ledger: Ledger::new(ledger), external: Some(external::ExternalPayments { store, bank }), ..self }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger<dyn Store> {
        &self.ledger
    }

    /// Strong customer authentication.
    pub fn sca(&self) -> &Sca {
        &self.sca
    }

    fn hooks(&self) -> &dyn Hooks {
        self.sca.hooks().as_ref()
    }

    /// Pays: posted at once when exempt, otherwise pending with a challenge. See the module
    /// documentation for retries.
    ///
    /// A payment to [`Payee::External`] is handed to the rail ([`Payment::Submitted`]) when
    /// exempt, otherwise challenged the same way; it is refused (after the payer's account is
    /// checked, nothing held) without [`Payments::with_external`]
    /// ([`PaymentError::NotSupported`]), in another currency than the rail's
    /// ([`PaymentError::Rail`]), or to an IBAN of this bank ([`PaymentError::OwnIban`]).
    pub async fn pay(
        &self,
        customer: CustomerId,
        key: &IdempotencyKey,
        request: &PaymentRequest,
    ) -> Result<PayReceipt, PaymentError> {
        let from = self.own_account(customer, request.from_account).await?;
        let payee_number = match &request.payee {
            Payee::Account(number) => *number,
            Payee::External(payee) => return self.pay_external(customer, &from, key, payee, request).await,
        };
        let to = self.payee_account(payee_number).await?;
        let relation = self.relation(customer, &to).await?;
        let payment =
            InternalPayment { from: from.id, to: to.id, amount: request.amount, reference: request.reference.clone() };
        let order = Order { customer, id: transfer_id(customer, key), payment, payee_number, relation };
        // Own accounts and trusted payees need no security state, so no lock; the low-value
        // exemption reads and counts it under the customer's lock.
        if let Some(exemption) = standing_exemption(self.sca.rules(), relation, &order.payment.amount) {
            return Ok(self.submit(&order, None).await?.posted(exemption));
        }
        let _guard = self.sca.lock(customer).await;
        let store = self.sca.store();
        let mut state = store.security_state(customer).await?;
        if low_value_allows(self.sca.rules(), &order.payment.amount, &state) {
            let submitted = self.submit(&order, None).await?;
            if let Submitted::New(t) = &submitted
                && t.state == TransferState::Posted
            {
                count_low_value(self.sca.rules(), &mut state, &order.payment.amount);
                store.put_security_state(customer, state).await?;
                let detail = serde_json::json!({ "rule": "low_value", "transfer": order.id.to_string() });
                self.sca.audit(AuditKind::ScaExempted, Some(customer), detail).await?;
            }
            return Ok(submitted.posted(Exemption::LowValue));
        }
        let expires_at = self.sca.now() + self.sca.rules().challenge_ttl();
        let transfer = match self.submit(&order, Some(expires_at)).await? {
            Submitted::New(t) => t,
            Submitted::Replay(receipt) => return Ok(*receipt),
        };
        let (challenge, methods) = self.open_challenge(customer, &transfer, payee_number).await?;
        self.hooks().payment(PaymentOutcome::ScaRequired);
        Ok(PayReceipt {
            payment: Payment::Challenged { transfer, challenge: Box::new(challenge), methods },
            replayed: false,
        })
    }

    /// Confirms `customer`'s pending payment `transfer_id` with `answer` to its challenge, and
    /// posts it — or, for a payment to another bank, writes its service record, which takes the
    /// pending transfer over as its hold ([`Confirmed::service`]). An answer is spent once; a
    /// payment confirmed before its server stopped is posted (or recorded) by the next
    /// confirmation.
    pub async fn confirm(
        &self,
        customer: CustomerId,
        transfer_id: TransferId,
        answer: &ScaAnswer,
    ) -> Result<Confirmed, PaymentError> {
        let transfer = self.ledger.store().transfer(transfer_id).await?.ok_or(PaymentError::NotFound("transfer"))?;
        if self.ledger.account(transfer.debit_account).await?.customer_id() != Some(customer) {
            return Err(PaymentError::NotFound("transfer"));
        }
        let challenge = self.sca.challenge_of(customer, challenge_id(transfer.id.as_uuid())).await?;
        if transfer.kind == TransferKind::Interbank {
            return self.confirm_external(customer, &transfer, challenge, answer).await;
        }
        if transfer.kind == TransferKind::Fx {
            return self.confirm_international(customer, &transfer, challenge, answer).await;
        }
        let payee = Payee::Account(self.ledger.account(transfer.credit_account).await?.number);
        if !payee.links(&challenge, &transfer) {
            return Err(PaymentError::ChallengeMismatch);
        }
        let _guard = self.sca.lock(customer).await;
        awaiting_answer(&transfer)?;
        let answered = self.spend_answer(challenge, answer).await?;
        let receipt = self.ledger.post_pending(transfer.id).await?;
        self.hooks().ledger_changed();
        self.hooks().payment(PaymentOutcome::Posted);
        let methods = self.sca.methods(customer, &answered.purpose).await?;
        Ok(Confirmed { transfer: receipt.transfer, challenge: answered, methods, service: None })
    }

    /// Checks and spends `answer` to `challenge` (the caller holds the customer's lock).
    async fn spend_answer(&self, challenge: ScaChallenge, answer: &ScaAnswer) -> Result<ScaChallenge, PaymentError> {
        match self.sca.answer(&challenge, answer).await {
            Ok(c) => Ok(c),
            // Answered before, but the payment is still pending (the server stopped in
            // between): the customer did authorize it, so it goes ahead now.
            Err(ScaError::Closed(Closed::Answered)) if matches!(challenge.state, ChallengeState::Answered { .. }) => {
                Ok(challenge)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds a payee of this bank to `customer`'s beneficiaries, pending until the challenge it
    /// returns is answered ([`Payments::confirm_beneficiary`]).
    pub async fn add_beneficiary(
        &self,
        customer: CustomerId,
        name: &str,
        number: AccountNumber,
    ) -> Result<BeneficiaryChallenge, PaymentError> {
        let name = limits::display_name(name)?;
        self.payee_account(number).await?;
        let _guard = self.sca.lock(customer).await;
        let store = self.sca.store();
        limits::may_add_beneficiary(&store.beneficiaries_of(customer).await?, number)?;
        let now = self.sca.now();
        let beneficiary = Beneficiary {
            id: BeneficiaryId::new_v7(),
            customer_id: customer,
            name,
            account_number: number,
            state: BeneficiaryState::Pending,
            created_at: now,
            trusted_by: None,
        };
        store.put_beneficiary(beneficiary.clone()).await?;
        let purpose = ChallengePurpose::Beneficiary { beneficiary_id: beneficiary.id, payee: number };
        let (challenge, methods) = self.sca.open(customer, purpose, now + self.sca.rules().challenge_ttl()).await?;
        Ok(BeneficiaryChallenge { beneficiary, challenge, methods })
    }

    /// Trusts `customer`'s beneficiary `id` with `answer` to its challenge. Audited.
    pub async fn confirm_beneficiary(
        &self,
        customer: CustomerId,
        id: BeneficiaryId,
        answer: &ScaAnswer,
    ) -> Result<Beneficiary, PaymentError> {
        let store = self.sca.store();
        let mut beneficiary = store
            .beneficiary(id)
            .await?
            .filter(|b| b.customer_id == customer)
            .ok_or(PaymentError::NotFound("beneficiary"))?;
        if beneficiary.state == BeneficiaryState::Trusted {
            return Err(Closed::BeneficiaryTrusted.into());
        }
        let challenge = self.sca.challenge_of(customer, challenge_id(beneficiary.id.as_uuid())).await?;
        let _guard = self.sca.lock(customer).await;
        let answered = self.sca.answer(&challenge, answer).await?;
        beneficiary.state = BeneficiaryState::Trusted;
        beneficiary.trusted_by = match answered.state {
            ChallengeState::Answered { method, .. } => Some(method),
            ChallengeState::Open | ChallengeState::Failed => None,
        };
        store.put_beneficiary(beneficiary.clone()).await?;
        let detail = serde_json::json!({ "beneficiary": beneficiary.id.to_string() });
        self.sca.audit(AuditKind::BeneficiaryTrusted, Some(customer), detail).await?;
        Ok(beneficiary)
    }

    /// Removes `customer`'s beneficiary `id`: payments to it need SCA again. Audited.
    pub async fn remove_beneficiary(&self, customer: CustomerId, id: BeneficiaryId) -> Result<(), PaymentError> {
        if !self.sca.store().delete_beneficiary(customer, id).await? {
            return Err(PaymentError::NotFound("beneficiary"));
        }
        let detail = serde_json::json!({ "beneficiary": id.to_string() });
        self.sca.audit(AuditKind::BeneficiaryRemoved, Some(customer), detail).await?;
        Ok(())
    }

    /// `customer`'s beneficiaries, oldest first.
    pub async fn beneficiaries(&self, customer: CustomerId) -> Result<Vec<Beneficiary>, StoreError> {
        self.sca.store().beneficiaries_of(customer).await
    }

    /// `customer`'s account `id`; another customer's is not found.
    pub async fn own_account(&self, customer: CustomerId, id: AccountId) -> Result<Account, PaymentError> {
        match self.ledger.store().account(id).await? {
            Some(a) if a.customer_id() == Some(customer) => Ok(a),
            _ => Err(PaymentError::NotFound("account")),
        }
    }

    /// The customer account of this bank numbered `number`.
    async fn payee_account(&self, number: AccountNumber) -> Result<Account, PaymentError> {
        match self.ledger.store().account_by_number(number).await? {
            Some(a) if a.customer_id().is_some() => Ok(a),
            _ => Err(PaymentError::UnknownPayee),
        }
    }

    /// Who `payee` is to `customer`.
    async fn relation(&self, customer: CustomerId, payee: &Account) -> Result<PayeeRelation, StoreError> {
        if payee.customer_id() == Some(customer) {
            return Ok(PayeeRelation::OwnAccount);
        }
        let beneficiaries = self.sca.store().beneficiaries_of(customer).await?;
        let trusted =
            beneficiaries.iter().find(|b| b.account_number == payee.number && b.state == BeneficiaryState::Trusted);
        Ok(trusted.map_or(PayeeRelation::Other, |b| PayeeRelation::TrustedBeneficiary(Trust::of(b.trusted_by))))
    }

    /// Submits to the ledger; a retry of the same key (one that got there first) gets the
    /// earlier attempt's answer. No look-up of the id first: the ledger itself answers a retry
    /// as a replay (same request) or a conflict (another request, or the same one decided with
    /// another hold).
    async fn submit(&self, order: &Order, hold_until: Option<crate::Timestamp>) -> Result<Submitted, PaymentError> {
        match self.ledger.transfer(order.request(hold_until)).await {
            Ok(receipt) if receipt.replayed => self.replay(order).await.map(|r| Submitted::Replay(Box::new(r))),
            Ok(receipt) => {
                self.hooks().ledger_changed();
                if receipt.transfer.state == TransferState::Posted {
                    self.hooks().payment(PaymentOutcome::Posted);
                }
                Ok(Submitted::New(receipt.transfer))
            }
            Err(Error::Ledger(LedgerError::IdempotencyConflict { .. })) => {
                self.replay(order).await.map(|r| Submitted::Replay(Box::new(r)))
            }
            Err(e) => {
                self.hooks().payment(PaymentOutcome::Rejected);
                Err(e.into())
            }
        }
    }

    /// The answer to a retry: what the first attempt answered, with the transfer as it is now;
    /// a conflict when the key was used for another payment.
    async fn replay(&self, order: &Order) -> Result<PayReceipt, PaymentError> {
        let existing = self.ledger.transfer_by_id(order.id).await?;
        if !order.payment.is(&existing) {
            return Err(LedgerError::IdempotencyConflict { id: order.id.to_string() }.into());
        }
        let challenge = self.sca.store().challenge(challenge_id(existing.id.as_uuid())).await?;
        let payment = match challenge {
            Some(challenge) => {
                let methods = self.sca.methods(order.customer, &challenge.purpose).await?;
                Payment::Challenged { transfer: existing, challenge: Box::new(challenge), methods }
            }
            // A crash between the pending transfer and its challenge: the challenge is made now.
            None if existing.state == TransferState::Pending => {
                let (challenge, methods) = self.open_challenge(order.customer, &existing, order.payee_number).await?;
                Payment::Challenged { transfer: existing, challenge: Box::new(challenge), methods }
            }
            None => {
                let exemption = match order.relation {
                    PayeeRelation::OwnAccount => Exemption::OwnAccounts,
                    PayeeRelation::TrustedBeneficiary(_) => Exemption::TrustedBeneficiary,
                    PayeeRelation::Other => Exemption::LowValue,
                };
                Payment::Posted { transfer: existing, exemption }
            }
        };
        Ok(PayReceipt { payment, replayed: true })
    }

    /// Opens the challenge of a pending `transfer` to `payee`, answerable while its hold lasts.
    async fn open_challenge(
        &self,
        customer: CustomerId,
        transfer: &Transfer,
        payee: AccountNumber,
    ) -> Result<(ScaChallenge, Vec<ScaMethod>), StoreError> {
        let purpose = ChallengePurpose::Payment { transfer_id: transfer.id, amount: transfer.amount, payee };
        self.sca.open(customer, purpose, transfer.hold_until.unwrap_or_else(|| self.sca.now())).await
    }
}
