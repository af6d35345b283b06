//! The conformance suite of the payments façade ([`Payments`](crate::payments::Payments)) and
//! strong customer authentication ([`Sca`]): the same payment flow run on every pair of stores
//! (the memory stores in bp-core's tests, SQLite in `bp-storage`). A backend plugs in through a
//! [`Factory`] of [`PaymentStores`], which makes fresh, empty stores on a given clock for every
//! case; the [`payments_conformance_tests!`](crate::payments_conformance_tests) macro expands
//! into one `#[tokio::test]` per case:
//!
//! ```text
//! mod sqlite_payments {
//!     bp_core::payments_conformance_tests!(bp_core::testing::factory_fn(|clock| async move {
//!         let store = std::sync::Arc::new(my_store_on(clock));
//!         std::sync::Arc::new(PaymentStores { ledger: store.clone(), security: store })
//!     }));
//! }
//! ```
//!
//! Every case states the exact answer of every call; every refused call is checked to have
//! moved no money (balances, holds and the outbox are read before and after), and every case
//! ends with the ledger's invariants. Device keys and nonces are deterministic, so a failure
//! replays.

// Amounts in the cases are written as major_minor units: `150_00` is 150.00 EUR.
#![allow(clippy::inconsistent_digit_grouping)]

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::TimeDelta;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};

use super::books::{read_books, read_outbox};
use super::conformance::Factory;
use super::fixtures::{ok, person, start_time};
use crate::account::{Account, AccountKind, NewAccount, SystemAccount};
use crate::clock::{Clock, ManualClock};
use crate::event::EventBody;
use crate::external::ExternalAccount;
use crate::external::lifecycle::{InterbankDetails, record_id};
use crate::external::rail::RailId;
use crate::hooks::{Hooks, PaymentOutcome};
use crate::ids::{AccountId, CustomerId, DeviceId, ServiceRecordId, TransferId};
use crate::invariants::Scope;
use crate::money::{Currency, Money};
use crate::payments::{
    IdempotencyKey, PayReceipt, Payee, Payment, PaymentError, PaymentRequest, Payments, transfer_id,
};
use crate::random::SeededRandomness;
use crate::sca::factors::{TOTP_STEP_S, b64, totp_code};
use crate::sca::{Closed, Exemption, LockoutRules, Sca, ScaAnswer, ScaError, ScaRules, device_registration_message};
use crate::security::{
    AuditEntry, AuditKind, BeneficiaryState, Credentials, DEVICES_MAX, ScaChallenge, ScaMethod, SecurityStore,
};
use crate::service::Ledger;
use crate::service_record::{ServiceKind, ServiceRecord, ServiceStatus};
use crate::service_store::ServiceStore;
use crate::store::{PAGE_LEN_MAX, Store};
use crate::transfer::{TransferKind, TransferRequest, TransferState};

/// What the façade runs on: a ledger store (with its service records, for payments to other
/// banks) and a security store (one backend may be both).
#[derive(Clone)]
pub struct PaymentStores {
    /// The ledger and its service records.
    pub ledger: Arc<dyn ServiceStore>,
    /// The security records.
    pub security: Arc<dyn SecurityStore>,
}

impl std::fmt::Debug for PaymentStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentStores")
    }
}

/// A [`Factory`] of [`PaymentStores`]: the factory of this suite. Every [`Factory`] whose value
/// is a [`PaymentStores`] is one.
pub trait PaymentsFactory: Factory<S = PaymentStores> {}

impl<F: Factory<S = PaymentStores>> PaymentsFactory for F {}

/// Runs every case of the suite, one after the other, each on fresh stores from `factory`.
/// Panics on the first failure, naming the case.
pub async fn run_all<F: PaymentsFactory>(factory: &F) {
    crate::__payments_conformance_cases!(@run_all factory);
}

/// The names of the cases, in the order [`run_all`] runs them; each is a function of this module.
pub const CASES: &[&str] = crate::__payments_conformance_cases!(@names);

/// Expands into one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per case of the
/// payments conformance suite, each on fresh stores from the factory expression (an
/// `impl PaymentsFactory`, evaluated once per test). Invoke it inside a module of its own; the
/// crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! payments_conformance_tests {
    ($factory:expr) => {
        $crate::__payments_conformance_cases!(@tests ($factory));
    };
}

/// The list of cases, written once for [`run_all`], [`CASES`] and
/// [`payments_conformance_tests!`](crate::payments_conformance_tests); see
/// [`conformance`](super::conformance) for the expansions.
#[doc(hidden)]
#[macro_export]
macro_rules! __payments_conformance_cases {
    ($($mode:tt)*) => {
        $crate::__conformance! { $($mode)* "payments" [$crate::testing::payments]
            own_accounts
            low_value
            dynamic_linking
            replayed_answers
            lockout
            expiry
            totp_limit
            trusted_beneficiaries
            device_registration
            refusals
            crash_recovery
            concurrent_retries
            external_low_value
            external_confirmed
            external_tampered
            external_refusals
            external_crash_recovery
            external_concurrent_retries
            international_confirmed
            international_refusals
            international_quote_once
            loan_acceptance
        }
    };
}

/// Records what the façade told its host.
#[derive(Debug, Default)]
struct Recorded {
    ledger_changes: Mutex<usize>,
    audits: Mutex<Vec<AuditEntry>>,
    outcomes: Mutex<Vec<PaymentOutcome>>,
}

impl Hooks for Recorded {
    fn ledger_changed(&self) {
        *self.ledger_changes.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn audited(&self, entry: &AuditEntry) {
        self.audits.lock().unwrap_or_else(PoisonError::into_inner).push(entry.clone());
    }

    fn payment(&self, outcome: PaymentOutcome) {
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).push(outcome);
    }
}

/// A customer of a case: one EUR account, an authenticator app, maybe a phone.
#[derive(Debug)]
struct Person {
    id: CustomerId,
    account: Account,
    totp: Vec<u8>,
}

/// A device key of a case, made from a seed.
#[derive(Clone)]
struct Phone {
    key: SigningKey,
    device_id: DeviceId,
}

impl Phone {
    fn sign(&self, message: &str) -> String {
        let sig: Signature = self.key.sign(message.as_bytes());
        b64(sig.to_der().as_bytes())
    }

    fn answer(&self, challenge: &ScaChallenge) -> ScaAnswer {
        self.answer_text(challenge, &crate::sca::signing_message(challenge))
    }

    /// An answer to `challenge` signing `text` instead of its own text.
    fn answer_text(&self, challenge: &ScaChallenge, text: &str) -> ScaAnswer {
        ScaAnswer::DeviceSignature { challenge_id: challenge.id, device_id: self.device_id, signature: self.sign(text) }
    }
}

/// What a refused call must not have changed: every balance and hold of the case's accounts,
/// and the outbox.
#[derive(Debug, PartialEq)]
struct Holdings {
    accounts: Vec<(AccountId, i64, i64)>,
    outbox_len: usize,
}

/// The façade under test on fresh stores, its clock, and what its hooks recorded.
struct Bank {
    clock: Arc<ManualClock>,
    payments: Payments,
    stores: Arc<PaymentStores>,
    recorded: Arc<Recorded>,
    accounts: Mutex<Vec<AccountId>>,
    /// The last TOTP step used per customer, so that each answer has a code not spent yet.
    steps: Mutex<Vec<(CustomerId, u64)>>,
    /// Each customer's first phone, which signs the registration of their next ones.
    phones: Mutex<Vec<(CustomerId, Phone)>>,
}

impl Bank {
    async fn new<F: PaymentsFactory>(factory: &F) -> Self {
        Self::with(factory, ScaRules::default(), LockoutRules::default()).await
    }

    async fn with<F: PaymentsFactory>(factory: &F, rules: ScaRules, lockout: LockoutRules) -> Self {
        let clock = Arc::new(ManualClock::new(start_time()));
        let stores = factory.fresh(Arc::clone(&clock)).await;
        let recorded = Arc::new(Recorded::default());
        let clock_dyn: Arc<dyn Clock> = clock.clone();
        let sca = Sca::new(Arc::clone(&stores.security), clock_dyn, rules, lockout)
            .with_randomness(Arc::new(SeededRandomness::new(0x5eed)))
            .with_hooks(recorded.clone());
        let ledger: Arc<dyn Store> = stores.ledger.clone();
        let desk: Arc<dyn Clock> = clock.clone();
        let payments = Payments::new(Ledger::new(ledger), sca)
            .with_external(Arc::clone(&stores.ledger), bank_ibans())
            .with_fx(Arc::new(super::fx::QuoteDesk::new(desk)));
        Self {
            clock,
            payments,
            stores,
            recorded,
            accounts: Mutex::default(),
            steps: Mutex::default(),
            phones: Mutex::default(),
        }
    }

    fn sca(&self) -> &Sca {
        self.payments.sca()
    }

    fn ledger(&self) -> &Ledger<dyn Store> {
        self.payments.ledger()
    }

    fn advance_secs(&self, secs: i64) {
        self.clock.set(self.clock.now() + TimeDelta::seconds(secs));
    }

    /// A person with a EUR account holding `funds_minor` and an authenticator app.
    async fn person(&self, username: &str, funds_minor: i64) -> Person {
        let customer = ok("open customer", self.ledger().open_customer(person(username)).await);
        let account = self.account(customer.id, funds_minor).await;
        let totp: Vec<u8> = username.bytes().cycle().take(20).collect();
        let credentials = Credentials {
            customer_id: customer.id,
            password_hash: "not used by these cases".to_owned(),
            totp_secret: Some(totp.clone()),
            updated_at: self.clock.now(),
        };
        ok("credentials", self.stores.security.put_credentials(credentials).await);
        Person { id: customer.id, account, totp }
    }

    /// Another EUR account of `customer`, holding `funds_minor`.
    async fn account(&self, customer: CustomerId, funds_minor: i64) -> Account {
        let request = NewAccount {
            id: AccountId::new_v7(),
            customer_id: customer,
            kind: AccountKind::Current,
            currency: Currency::EUR,
            overdraft_limit_minor: 0,
        };
        let account = ok("open account", self.ledger().open_account(request).await);
        if funds_minor > 0 {
            ok("fund", self.ledger().fund(TransferId::new_v7(), account.id, eur(funds_minor)).await);
        }
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner).push(account.id);
        ok("read account", self.ledger().account(account.id).await)
    }

    /// Registers a device key made from `seed` for `p`: the first by a TOTP code right after a
    /// sign-in, the next ones signed by the first.
    async fn phone(&self, p: &Person, seed: u8) -> Phone {
        let key = SigningKey::from_slice(&[seed; 32]).expect("a valid scalar");
        let (public, proof) = registration(&key, p.id);
        let begun = self.sca().begin_device_registration(p.id, "Phone", &public, &proof, Some(self.clock.now())).await;
        let begun = ok("begin registering a device", begun);
        let first = self.first_phone(p.id);
        let answer = match &first {
            Some(signer) => signer.answer(&begun.challenge),
            None => self.totp(p, &begun.challenge),
        };
        let device = ok("register device", self.sca().confirm_device(p.id, begun.device_id, &answer).await);
        let phone = Phone { key, device_id: device.id };
        if first.is_none() {
            self.phones.lock().unwrap_or_else(PoisonError::into_inner).push((p.id, phone.clone()));
        }
        phone
    }

    /// `customer`'s first phone, if they have one.
    fn first_phone(&self, customer: CustomerId) -> Option<Phone> {
        let phones = self.phones.lock().unwrap_or_else(PoisonError::into_inner);
        phones.iter().find(|(c, _)| *c == customer).map(|(_, phone)| phone.clone())
    }

    /// A TOTP answer of `p` to `challenge` with a code not used before.
    fn totp(&self, p: &Person, challenge: &ScaChallenge) -> ScaAnswer {
        let now_step = u64::try_from(self.clock.now().timestamp()).unwrap_or(0) / TOTP_STEP_S;
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        let last = steps.iter().find(|(c, _)| *c == p.id).map(|(_, s)| *s);
        let step = last.map_or(now_step.saturating_sub(1), |l| (l + 1).max(now_step.saturating_sub(1)));
        assert!(step <= now_step + 1, "a case used more TOTP codes than a minute holds: advance the clock");
        steps.retain(|(c, _)| *c != p.id);
        steps.push((p.id, step));
        ScaAnswer::Totp { challenge_id: challenge.id, code: totp_code(&p.totp, step) }
    }

    async fn pay(&self, p: &Person, to: &Account, amount_minor: i64, key: &str) -> Result<PayReceipt, PaymentError> {
        let request = PaymentRequest {
            from_account: p.account.id,
            payee: Payee::Account(to.number),
            amount: eur(amount_minor),
            reference: None,
        };
        self.payments.pay(p.id, &key_of(key), &request).await
    }

    /// Balances and holds of every account of the case, and the outbox's length.
    async fn money(&self) -> Holdings {
        let ids = self.accounts.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut accounts = Vec::new();
        for id in ids {
            let a = ok("read account", self.ledger().account(id).await);
            accounts.push((id, a.posted_minor, a.held_minor));
        }
        let outbox_len = ok("outbox", self.stores.ledger.outbox_after(0, PAGE_LEN_MAX).await).len();
        Holdings { accounts, outbox_len }
    }

    /// Runs `op`, which must be refused as `expected` says, moving no money.
    async fn refuses<T: std::fmt::Debug>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, PaymentError>>,
        expected: impl Fn(&PaymentError) -> bool,
    ) {
        let before = self.money().await;
        match op.await {
            Err(e) if expected(&e) => {}
            other => panic!("{what}: refused as expected? got {other:?}"),
        }
        assert_eq!(before, self.money().await, "{what}: a refused call moved money");
    }

    async fn posted_minor(&self, account: &Account) -> i64 {
        ok("read account", self.ledger().account(account.id).await).posted_minor
    }

    async fn held_minor(&self, account: &Account) -> i64 {
        ok("read account", self.ledger().account(account.id).await).held_minor
    }

    fn audits(&self, kind: AuditKind) -> usize {
        self.recorded.audits.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|e| e.kind == kind).count()
    }

    /// Every case ends here: the ledger's invariants over every account and transfer it has.
    async fn check_invariants(&self) {
        let store = self.stores.ledger.as_ref();
        let outbox = read_outbox(store, PAGE_LEN_MAX).await;
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for total in ok("totals", store.totals().await) {
            accounts.extend(SystemAccount::ALL.iter().map(|s| s.id(total.currency)));
        }
        accounts.extend(outbox.iter().map(|e| e.event.account_id));
        let mut seen = std::collections::HashSet::new();
        accounts.retain(|a| seen.insert(*a));
        let mut books = read_books(store, &accounts, Scope::Ledger).await;
        let mut transfers = Vec::new();
        for id in outbox.iter().filter_map(|e| e.event.body.transfer_id()) {
            if !transfers.iter().any(|t: &crate::transfer::Transfer| t.id == id) {
                transfers.push(ok("read transfer", store.transfer(id).await).expect("an event's transfer exists"));
            }
        }
        books.transfers = Some(transfers);
        if let Err(violation) = crate::invariants::check(&books) {
            panic!("the ledger after the case: {violation}");
        }
    }
}

/// The public key of `key` and its proof of possession for `customer`, base64url, as a device
/// registers them.
fn registration(key: &SigningKey, customer: CustomerId) -> (String, String) {
    let public = b64(key.verifying_key().to_encoded_point(false).as_bytes());
    let proof: Signature = key.sign(device_registration_message(customer, &public).as_bytes());
    (public, b64(&proof.to_bytes()))
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn key_of(key: &str) -> IdempotencyKey {
    IdempotencyKey::parse(key).expect("a valid key")
}

fn posted(receipt: &PayReceipt) -> (&crate::transfer::Transfer, Exemption) {
    match &receipt.payment {
        Payment::Posted { transfer, exemption } => (transfer, *exemption),
        other => panic!("expected a posted payment, got {other:?}"),
    }
}

fn challenged(receipt: &PayReceipt) -> (&crate::transfer::Transfer, &ScaChallenge, &[ScaMethod]) {
    match &receipt.payment {
        Payment::Challenged { transfer, challenge, methods } => (transfer, &**challenge, methods),
        other => panic!("expected a payment waiting for SCA, got {other:?}"),
    }
}

fn is_sca(e: &PaymentError, expected: &ScaError) -> bool {
    matches!(e, PaymentError::Sca(actual) if std::mem::discriminant(actual) == std::mem::discriminant(expected)
        && format!("{actual}") == format!("{expected}"))
}

fn is_closed(e: &PaymentError, why: Closed) -> bool {
    matches!(e, PaymentError::Sca(ScaError::Closed(c)) if *c == why)
}

/// Between a customer's own accounts: exempt at any amount; a retry is answered as the first
/// attempt and moves nothing; the same key for another payment is a conflict.
pub async fn own_accounts<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 10_000_00).await;
    let savings = bank.account(ada.id, 0).await;
    let first = ok("pay own account", bank.pay(&ada, &savings, 5_000_00, "own-1").await);
    let (transfer, exemption) = posted(&first);
    assert_eq!((exemption, first.replayed, transfer.state), (Exemption::OwnAccounts, false, TransferState::Posted));
    assert_eq!(transfer.id, transfer_id(ada.id, &key_of("own-1")), "the id is derived from customer and key");
    assert_eq!(bank.posted_minor(&savings).await, 5_000_00);
    let changes = *bank.recorded.ledger_changes.lock().unwrap_or_else(PoisonError::into_inner);
    let before = bank.money().await;
    let again = ok("retry", bank.pay(&ada, &savings, 5_000_00, "own-1").await);
    assert!(again.replayed, "a retry is a replay");
    assert_eq!(posted(&again), (transfer, Exemption::OwnAccounts), "the first answer again");
    assert_eq!(before, bank.money().await, "a retry moves nothing");
    assert_eq!(*bank.recorded.ledger_changes.lock().unwrap_or_else(PoisonError::into_inner), changes);
    bank.refuses("the same key for another amount", bank.pay(&ada, &savings, 1_00, "own-1"), |e| {
        matches!(e, PaymentError::Ledger(crate::LedgerError::IdempotencyConflict { .. }))
    })
    .await;
    assert_eq!(bank.audits(AuditKind::ScaExempted), 0, "only low-value exemptions are counted and audited");
    bank.check_invariants().await;
}

/// Low value: below 30.00, at most 100.00 in total and 5 payments since the last SCA; an
/// answered challenge starts the counts again.
pub async fn low_value<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 10_000_00).await;
    let bob = bank.person("bob", 0).await;
    for i in 0..3 {
        let receipt = ok("small payment", bank.pay(&ada, &bob.account, 29_99, &format!("lv-{i}")).await);
        assert_eq!(posted(&receipt).1, Exemption::LowValue);
    }
    assert_eq!(bank.audits(AuditKind::ScaExempted), 3, "each low-value exemption is audited");
    let over_total = ok("a fourth 29.99", bank.pay(&ada, &bob.account, 29_99, "lv-3").await);
    let (transfer, challenge, methods) = challenged(&over_total);
    assert_eq!(transfer.state, TransferState::Pending, "the cumulative 100.00 would be passed");
    assert_eq!(methods, [ScaMethod::Totp], "no device: a TOTP code within its limit");
    assert_eq!(bank.held_minor(&ada.account).await, 29_99, "a pending payment holds its amount");
    let not_below = ok("30.00", bank.pay(&ada, &bob.account, 30_00, "lv-4").await);
    assert_eq!(challenged(&not_below).0.state, TransferState::Pending, "30.00 is not below 30");
    let answer = bank.totp(&ada, challenge);
    let confirmed = ok("confirm by TOTP", bank.payments.confirm(ada.id, transfer.id, &answer).await);
    assert_eq!(confirmed.transfer.state, TransferState::Posted);
    assert_eq!(bank.posted_minor(&bob.account).await, 4 * 29_99);
    // The SCA started the counts again: five small payments, then no more.
    for i in 0..5 {
        let receipt = ok("after the SCA", bank.pay(&ada, &bob.account, 1_00, &format!("lv-again-{i}")).await);
        assert_eq!(posted(&receipt).1, Exemption::LowValue);
    }
    let sixth = ok("a sixth", bank.pay(&ada, &bob.account, 1_00, "lv-again-5").await);
    assert_eq!(challenged(&sixth).0.state, TransferState::Pending, "at most 5 in a row");
    // A retry of an exempt payment is answered as one, and is not counted twice.
    let audited = bank.audits(AuditKind::ScaExempted);
    let again = ok("retry", bank.pay(&ada, &bob.account, 1_00, "lv-again-0").await);
    assert_eq!((posted(&again).1, again.replayed), (Exemption::LowValue, true));
    assert_eq!(bank.audits(AuditKind::ScaExempted), audited);
    let state = ok("state", bank.stores.security.security_state(ada.id).await);
    assert_eq!((state.low_value_count, state.low_value_total_minor.get(&Currency::EUR)), (5, Some(&5_00)));
    bank.check_invariants().await;
}

/// A device key's signature of the challenge's exact text: a changed amount or payee fails,
/// TOTP is not taken once there is a device, the right signature posts, once.
pub async fn dynamic_linking<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 10_000_00).await;
    let bob = bank.person("bob", 0).await;
    let phone = bank.phone(&ada, 7).await;
    let receipt = ok("pay 150.00", bank.pay(&ada, &bob.account, 150_00, "p-1").await);
    let (transfer, challenge, methods) = challenged(&receipt);
    assert_eq!(methods, [ScaMethod::DeviceSignature]);
    let text = crate::sca::signing_message(challenge);
    for part in [
        "amount:150.00",
        "currency:EUR",
        &format!("payee:{}", bob.account.number),
        &format!("transfer:{}", transfer.id),
    ] {
        assert!(text.contains(part), "the text names {part}: {text}");
    }
    assert_eq!(
        bank.recorded.outcomes.lock().unwrap_or_else(PoisonError::into_inner).last(),
        Some(&PaymentOutcome::ScaRequired)
    );
    let confirm = |answer: ScaAnswer| {
        let payments = bank.payments.clone();
        let (customer, id) = (ada.id, transfer.id);
        async move { payments.confirm(customer, id, &answer).await }
    };
    let tampered = phone.answer_text(challenge, &text.replace("amount:150.00", "amount:1.50"));
    bank.refuses("a signature of another amount", confirm(tampered), |e| is_sca(e, &ScaError::Failed)).await;
    let tampered = phone.answer_text(challenge, &text.replace(&bob.account.number.to_string(), "000000000097"));
    bank.refuses("a signature of another payee", confirm(tampered), |e| is_sca(e, &ScaError::Failed)).await;
    let totp = bank.totp(&ada, challenge);
    bank.refuses(
        "TOTP once there is a device",
        confirm(totp),
        |e| matches!(e, PaymentError::Sca(ScaError::MethodNotAccepted(m)) if m == &[ScaMethod::DeviceSignature]),
    )
    .await;
    assert_eq!(bank.audits(AuditKind::ChallengeFailed), 2, "each wrong answer is audited");
    // A challenge changed in the store (another amount under the transfer's challenge id) is
    // not linked to the transfer any more: refused whatever the answer.
    let forged = ScaChallenge {
        purpose: crate::security::ChallengePurpose::Payment {
            transfer_id: transfer.id,
            amount: eur(1_50),
            payee: bob.account.number,
        },
        ..challenge.clone()
    };
    ok("replace the open challenge", bank.stores.security.put_challenge(forged.clone()).await);
    bank.refuses("a challenge of another amount", confirm(phone.answer(&forged)), |e| {
        matches!(e, PaymentError::ChallengeMismatch)
    })
    .await;
    ok("put it back", bank.stores.security.put_challenge(challenge.clone()).await);
    let good = phone.answer(challenge);
    let confirmed = ok("the right signature", confirm(good.clone()).await);
    assert_eq!(confirmed.transfer.state, TransferState::Posted);
    assert!(matches!(
        confirmed.challenge.state,
        crate::security::ChallengeState::Answered { method: ScaMethod::DeviceSignature, .. }
    ));
    assert_eq!((bank.posted_minor(&bob.account).await, bank.posted_minor(&ada.account).await), (150_00, 9_850_00));
    assert_eq!(bank.held_minor(&ada.account).await, 0, "the hold became the posting");
    bank.refuses("the same signature again", confirm(good), |e| is_closed(e, Closed::PaymentConfirmed)).await;
    let again = ok("a retry of the payment", bank.pay(&ada, &bob.account, 150_00, "p-1").await);
    let (now, same, _) = challenged(&again);
    assert_eq!((now.state, same.id, again.replayed), (TransferState::Posted, challenge.id, true), "as it is now");
    // Another customer's transfer is not found, even with a valid answer.
    let bob_phone = bank.phone(&bob, 9).await;
    bank.refuses(
        "bob confirming ada's transfer",
        bank.payments.confirm(bob.id, transfer.id, &bob_phone.answer(challenge)),
        |e| matches!(e, PaymentError::NotFound("transfer")),
    )
    .await;
    bank.check_invariants().await;
}

/// An answer is for one challenge: an old signature fails a new payment, and after
/// `challenge_failures_max` wrong answers the challenge fails for good.
pub async fn replayed_answers<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 10_000_00).await;
    let bob = bank.person("bob", 0).await;
    let phone = bank.phone(&ada, 7).await;
    let first = ok("first", bank.pay(&ada, &bob.account, 150_00, "p-1").await);
    let (t1, c1, _) = challenged(&first);
    ok("confirm the first", bank.payments.confirm(ada.id, t1.id, &phone.answer(c1)).await);
    let second = ok("second", bank.pay(&ada, &bob.account, 150_00, "p-2").await);
    let (t2, c2, _) = challenged(&second);
    assert_ne!(crate::sca::signing_message(c1), crate::sca::signing_message(c2), "nonce and transfer differ");
    let old = match phone.answer(c1) {
        ScaAnswer::DeviceSignature { device_id, signature, .. } => {
            ScaAnswer::DeviceSignature { challenge_id: c2.id, device_id, signature }
        }
        ScaAnswer::Totp { .. } => unreachable!("a phone signs"),
    };
    for _ in 0..ScaRules::default().challenge_failures_max {
        bank.refuses("the first payment's signature", bank.payments.confirm(ada.id, t2.id, &old), |e| {
            is_sca(e, &ScaError::Failed)
        })
        .await;
    }
    bank.refuses("the right answer, too late", bank.payments.confirm(ada.id, t2.id, &phone.answer(c2)), |e| {
        is_closed(e, Closed::Failed)
    })
    .await;
    let wrong_id = phone.answer(c1);
    bank.refuses("an answer naming another challenge", bank.payments.confirm(ada.id, t2.id, &wrong_id), |e| {
        is_sca(e, &ScaError::WrongChallenge)
    })
    .await;
    assert_eq!(bank.held_minor(&ada.account).await, 150_00, "the failed payment still holds until it expires");
    bank.check_invariants().await;
}

/// Wrong answers in a row lock the customer out, for longer each time; the lockout ends.
pub async fn lockout<F: PaymentsFactory>(factory: &F) {
    let rules = ScaRules { challenge_failures_max: 100, ..ScaRules::default() };
    let lockout = LockoutRules { failures_max: 3, ..LockoutRules::default() };
    let bank = Bank::with(factory, rules, lockout).await;
    let ada = bank.person("ada", 10_000_00).await;
    let bob = bank.person("bob", 0).await;
    let phone = bank.phone(&ada, 7).await;
    let receipt = ok("pay", bank.pay(&ada, &bob.account, 150_00, "p-1").await);
    let (transfer, challenge, _) = challenged(&receipt);
    let wrong = phone.answer_text(challenge, "something else");
    for _ in 0..3 {
        bank.refuses("a wrong answer", bank.payments.confirm(ada.id, transfer.id, &wrong), |e| {
            is_sca(e, &ScaError::Failed)
        })
        .await;
    }
    assert_eq!(bank.audits(AuditKind::LockedOut), 1);
    let good = phone.answer(challenge);
    bank.refuses("while locked out", bank.payments.confirm(ada.id, transfer.id, &good), |e| {
        matches!(e, PaymentError::Sca(ScaError::LockedOut { retry_after_s: 60 }))
    })
    .await;
    bank.advance_secs(60);
    for _ in 0..3 {
        bank.refuses("wrong again", bank.payments.confirm(ada.id, transfer.id, &wrong), |e| {
            is_sca(e, &ScaError::Failed)
        })
        .await;
    }
    bank.refuses("the second lockout is twice as long", bank.payments.confirm(ada.id, transfer.id, &good), |e| {
        matches!(e, PaymentError::Sca(ScaError::LockedOut { retry_after_s: 120 }))
    })
    .await;
    bank.advance_secs(120);
    ok("after the lockout", bank.payments.confirm(ada.id, transfer.id, &good).await);
    let state = ok("state", bank.stores.security.security_state(ada.id).await);
    assert_eq!(state.failures, 0, "an answered challenge clears the failures");
    bank.check_invariants().await;
}

/// A challenge lasts as long as its payment's hold: answered after it, it is refused; the
/// sweeper voids the payment and frees the money.
pub async fn expiry<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 1_000_00).await;
    let bob = bank.person("bob", 0).await;
    let receipt = ok("pay", bank.pay(&ada, &bob.account, 400_00, "p-1").await);
    let (transfer, challenge, methods) = challenged(&receipt);
    assert_eq!(methods, [ScaMethod::Totp]);
    let ttl = ScaRules::default().challenge_ttl();
    assert_eq!((challenge.expires_at, transfer.hold_until), (transfer.created_at + ttl, Some(challenge.expires_at)));
    bank.advance_secs(ttl.num_seconds());
    let late = bank.totp(&ada, challenge);
    bank.refuses("an answer after the expiry", bank.payments.confirm(ada.id, transfer.id, &late), |e| {
        is_closed(e, Closed::Expired)
    })
    .await;
    // The ledger voids a hold once its time has passed.
    bank.advance_secs(1);
    let voided = ok("expire holds", bank.ledger().expire_holds(bank.clock.now(), 10).await);
    assert_eq!(voided, 1);
    assert_eq!(bank.held_minor(&ada.account).await, 0, "the hold is released");
    let later = bank.totp(&ada, challenge);
    bank.refuses("an answer to a voided payment", bank.payments.confirm(ada.id, transfer.id, &later), |e| {
        is_closed(e, Closed::PaymentEnded)
    })
    .await;
    bank.check_invariants().await;
}

/// Without a device, a TOTP code answers a payment up to its limit only; above it the customer
/// must register a device. A code is taken once.
pub async fn totp_limit<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 10_000_00).await;
    let bob = bank.person("bob", 0).await;
    let big = ok("600.00", bank.pay(&ada, &bob.account, 600_00, "big").await);
    let (t_big, c_big, methods) = challenged(&big);
    assert!(methods.is_empty(), "above the TOTP limit a device is needed");
    let answer = bank.totp(&ada, c_big);
    bank.refuses(
        "TOTP above its limit",
        bank.payments.confirm(ada.id, t_big.id, &answer),
        |e| matches!(e, PaymentError::Sca(ScaError::MethodNotAccepted(m)) if m.is_empty()),
    )
    .await;
    let small = ok("500.00", bank.pay(&ada, &bob.account, 500_00, "small").await);
    let (t_small, c_small, methods) = challenged(&small);
    assert_eq!(methods, [ScaMethod::Totp], "500.00 is within the limit");
    let answer = bank.totp(&ada, c_small);
    ok("TOTP within its limit", bank.payments.confirm(ada.id, t_small.id, &answer).await);
    let other = ok("another", bank.pay(&ada, &bob.account, 400_00, "other").await);
    let (t_other, c_other, _) = challenged(&other);
    let spent = match answer {
        ScaAnswer::Totp { code, .. } => ScaAnswer::Totp { challenge_id: c_other.id, code },
        ScaAnswer::DeviceSignature { .. } => unreachable!("a TOTP answer"),
    };
    bank.refuses("a spent TOTP code", bank.payments.confirm(ada.id, t_other.id, &spent), |e| {
        is_sca(e, &ScaError::Failed)
    })
    .await;
    bank.check_invariants().await;
}

/// Trusting a beneficiary takes an answered challenge; payments to it are then exempt — up to the
/// TOTP limit when a TOTP code trusted it, at any amount when a device's signature did — until
/// it is removed.
pub async fn trusted_beneficiaries<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 20_000_00).await;
    let bob = bank.person("bob", 0).await;
    let added = ok("add bob", bank.payments.add_beneficiary(ada.id, " Bob ", bob.account.number).await);
    assert_eq!((added.beneficiary.state, added.beneficiary.name.as_str()), (BeneficiaryState::Pending, "Bob"));
    assert_eq!(added.methods, [ScaMethod::Totp]);
    let pending = ok("not trusted yet", bank.pay(&ada, &bob.account, 500_00, "tb-0").await);
    challenged(&pending);
    let answer = bank.totp(&ada, &added.challenge);
    let trusted = ok("trust", bank.payments.confirm_beneficiary(ada.id, added.beneficiary.id, &answer).await);
    assert_eq!((trusted.state, trusted.trusted_by), (BeneficiaryState::Trusted, Some(ScaMethod::Totp)));
    assert_eq!(bank.audits(AuditKind::BeneficiaryTrusted), 1);
    let receipt =
        ok("pay a payee trusted by TOTP, within the TOTP limit", bank.pay(&ada, &bob.account, 500_00, "tb-1").await);
    assert_eq!(posted(&receipt).1, Exemption::TrustedBeneficiary);
    let above = ok("above the TOTP limit", bank.pay(&ada, &bob.account, 5_000_00, "tb-big").await);
    let (_, _, methods) = challenged(&above);
    assert!(methods.is_empty(), "a phished TOTP code does not open the account to any amount: a device is needed");
    // Trusted with a device's signature: exempt at any amount.
    let carol = bank.person("carol", 0).await;
    let phone = bank.phone(&ada, 7).await;
    let added_by_phone = ok("add carol", bank.payments.add_beneficiary(ada.id, "Carol", carol.account.number).await);
    assert_eq!(added_by_phone.methods, [ScaMethod::DeviceSignature], "with a device, TOTP no longer trusts a payee");
    let signed = phone.answer(&added_by_phone.challenge);
    let trusted =
        ok("trust by device", bank.payments.confirm_beneficiary(ada.id, added_by_phone.beneficiary.id, &signed).await);
    assert_eq!(trusted.trusted_by, Some(ScaMethod::DeviceSignature));
    let receipt = ok("pay a payee trusted by a device", bank.pay(&ada, &carol.account, 5_000_00, "tc-1").await);
    assert_eq!(posted(&receipt).1, Exemption::TrustedBeneficiary);
    let again = bank.totp(&ada, &added.challenge);
    bank.refuses("trusting twice", bank.payments.confirm_beneficiary(ada.id, added.beneficiary.id, &again), |e| {
        is_closed(e, Closed::BeneficiaryTrusted)
    })
    .await;
    bank.refuses("adding twice", bank.payments.add_beneficiary(ada.id, "Bob", bob.account.number), |e| {
        matches!(e, PaymentError::Sca(ScaError::Duplicate(_)))
    })
    .await;
    bank.refuses(
        "another customer's beneficiary",
        bank.payments.remove_beneficiary(bob.id, added.beneficiary.id),
        |e| matches!(e, PaymentError::NotFound("beneficiary")),
    )
    .await;
    ok("remove", bank.payments.remove_beneficiary(ada.id, added.beneficiary.id).await);
    assert_eq!(bank.audits(AuditKind::BeneficiaryRemoved), 1);
    let after = ok("after removal", bank.pay(&ada, &bob.account, 500_00, "tb-2").await);
    challenged(&after);
    let left = ok("list", bank.payments.beneficiaries(ada.id).await);
    assert_eq!(left.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["Carol"]);
    bank.check_invariants().await;
}

/// A device key is registered only through a challenge: the first with a TOTP code from a
/// session that signed in recently, the next ones signed by a device the customer has; removing
/// one needs a recent sign-in. A stolen session can neither add a thief's key nor remove the
/// owner's.
pub async fn device_registration<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 0).await;
    let bob = bank.person("bob", 0).await;
    let sca = bank.sca();
    let max_age_s = ScaRules::default().recent_sign_in_max_age_s;
    let seconds_ago = |s: u64| Some(bank.clock.now() - TimeDelta::seconds(i64::try_from(s).unwrap_or(0)));
    let first = SigningKey::from_slice(&[21; 32]).expect("a valid scalar");
    let (public, proof) = registration(&first, ada.id);
    for (what, signed_in) in [("no sign-in here", None), ("a sign-in too old", seconds_ago(max_age_s + 1))] {
        match sca.begin_device_registration(ada.id, "Phone", &public, &proof, signed_in).await {
            Err(ScaError::StepUp { max_age_s: asked }) => assert_eq!(asked, max_age_s, "{what}"),
            other => panic!("{what}: a first device needs a recent sign-in, got {other:?}"),
        }
    }
    let begun =
        ok("a recent sign-in", sca.begin_device_registration(ada.id, "Phone", &public, &proof, seconds_ago(10)).await);
    assert_eq!(begun.methods, [ScaMethod::Totp], "a first device: a TOTP code");
    let text = crate::sca::signing_message(&begun.challenge);
    for part in
        ["purpose:register_device", &format!("device:{}", begun.device_id), "name:Phone", &format!("key:{public}")]
    {
        assert!(text.contains(part), "the text names {part}: {text}");
    }
    let wrong = ScaAnswer::Totp { challenge_id: begun.challenge.id, code: "000000".to_owned() };
    assert!(matches!(sca.confirm_device(ada.id, begun.device_id, &wrong).await, Err(ScaError::Failed)));
    assert!(
        matches!(
            sca.confirm_device(bob.id, begun.device_id, &bank.totp(&bob, &begun.challenge)).await,
            Err(ScaError::NotFound(_))
        ),
        "another customer's registration is not found"
    );
    assert!(ok("devices", sca.devices(ada.id).await).is_empty(), "nothing registered by a wrong answer");
    let device =
        ok("the right code", sca.confirm_device(ada.id, begun.device_id, &bank.totp(&ada, &begun.challenge)).await);
    assert_eq!((device.id, device.name.as_str()), (begun.device_id, "Phone"));
    assert_eq!(bank.audits(AuditKind::DeviceAdded), 1, "audited, so on the customer's event stream");
    let phone = Phone { key: first, device_id: device.id };

    // With a device, only a device's signature registers another: no TOTP code, even from a
    // fresh session, and not the new key itself.
    let second = SigningKey::from_slice(&[22; 32]).expect("a valid scalar");
    let (public, proof) = registration(&second, ada.id);
    let begun = ok("a second device", sca.begin_device_registration(ada.id, "Tablet", &public, &proof, None).await);
    assert_eq!(begun.methods, [ScaMethod::DeviceSignature]);
    let by_totp = bank.totp(&ada, &begun.challenge);
    assert!(matches!(sca.confirm_device(ada.id, begun.device_id, &by_totp).await, Err(ScaError::MethodNotAccepted(_))));
    let itself = Phone { key: second.clone(), device_id: begun.device_id };
    assert!(matches!(
        sca.confirm_device(ada.id, begun.device_id, &itself.answer(&begun.challenge)).await,
        Err(ScaError::Failed)
    ));
    let tablet =
        ok("signed by the phone", sca.confirm_device(ada.id, begun.device_id, &phone.answer(&begun.challenge)).await);
    assert_eq!(ok("devices", sca.devices(ada.id).await).len(), 2);

    // Removing one needs a recent sign-in.
    for (what, signed_in) in [("no sign-in here", None), ("a sign-in too old", seconds_ago(max_age_s + 1))] {
        match sca.remove_device(ada.id, tablet.id, signed_in).await {
            Err(ScaError::StepUp { .. }) => {}
            other => panic!("{what}: removing a device needs a recent sign-in, got {other:?}"),
        }
    }
    ok("a recent sign-in removes it", sca.remove_device(ada.id, tablet.id, seconds_ago(0)).await);
    assert_eq!(ok("devices", sca.devices(ada.id).await).len(), 1);
    bank.check_invariants().await;
}

/// Bad input is refused with what is wrong, changing nothing: names, unknown payees, other
/// customers' accounts, device keys and proofs, and the bounds on devices.
pub async fn refusals<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 1_000_00).await;
    let bob = bank.person("bob", 1_000_00).await;
    let unknown = crate::account_number::AccountNumber::from_serial(999_999).expect("serial");
    let to_unknown = PaymentRequest {
        from_account: ada.account.id,
        payee: Payee::Account(unknown),
        amount: eur(1_00),
        reference: None,
    };
    bank.refuses("an unknown payee", bank.payments.pay(ada.id, &key_of("u"), &to_unknown), |e| {
        matches!(e, PaymentError::UnknownPayee)
    })
    .await;
    let from_bob = PaymentRequest {
        from_account: bob.account.id,
        payee: Payee::Account(ada.account.number),
        amount: eur(1_00),
        reference: None,
    };
    bank.refuses("from another customer's account", bank.payments.pay(ada.id, &key_of("b"), &from_bob), |e| {
        matches!(e, PaymentError::NotFound("account"))
    })
    .await;
    bank.refuses("paying the same account", bank.pay(&ada, &ada.account, 1_00, "self"), |e| {
        matches!(e, PaymentError::Ledger(crate::LedgerError::SameAccount))
    })
    .await;
    bank.refuses("an empty name", bank.payments.add_beneficiary(ada.id, "  ", bob.account.number), |e| {
        matches!(e, PaymentError::Sca(ScaError::Invalid(_)))
    })
    .await;
    bank.refuses("a beneficiary nobody is", bank.payments.add_beneficiary(ada.id, "Nobody", unknown), |e| {
        matches!(e, PaymentError::UnknownPayee)
    })
    .await;
    let sca = bank.sca();
    let now = Some(bank.clock.now());
    let key = SigningKey::from_slice(&[3; 32]).expect("a valid scalar");
    let (public, proof) = registration(&key, ada.id);
    let (_, bobs_proof) = registration(&key, bob.id);
    for (what, public_key, proof) in [
        ("a key that is not base64", "***".to_owned(), proof.clone()),
        ("a key of the wrong length", b64(&[4; 33]), proof.clone()),
        ("a key off the curve", b64(&[4; 65]), proof.clone()),
        ("a proof for another customer", public.clone(), bobs_proof),
    ] {
        match sca.begin_device_registration(ada.id, "Phone", &public_key, &proof, now).await {
            Err(ScaError::Invalid(_)) => {}
            other => panic!("{what}: expected Invalid, got {other:?}"),
        }
    }
    assert!(ok("devices", sca.devices(ada.id).await).is_empty(), "no refused key was registered");
    let mut phones = Vec::new();
    for seed in 0..DEVICES_MAX {
        phones.push(bank.phone(&ada, u8::try_from(seed + 10).unwrap_or(1)).await);
    }
    match sca.begin_device_registration(ada.id, "One too many", &public, &proof, now).await {
        Err(ScaError::TooMany(_)) => {}
        other => panic!("an eleventh device: expected TooMany, got {other:?}"),
    }
    ok("remove one", sca.remove_device(ada.id, phones[1].device_id, now).await);
    assert!(matches!(sca.remove_device(ada.id, phones[1].device_id, now).await, Err(ScaError::NotFound("device"))));
    assert!(matches!(sca.remove_device(bob.id, phones[2].device_id, now).await, Err(ScaError::NotFound("device"))));
    let begun = ok("now there is room", sca.begin_device_registration(ada.id, "Phone", &public, &proof, now).await);
    ok("registered", sca.confirm_device(ada.id, begun.device_id, &phones[0].answer(&begun.challenge)).await);
    match sca.begin_device_registration(ada.id, "Same key", &public, &proof, now).await {
        Err(ScaError::Duplicate(_)) => {}
        other => panic!("the same key twice: expected Duplicate, got {other:?}"),
    }
    assert_eq!(bank.audits(AuditKind::DeviceAdded), DEVICES_MAX + 1);
    assert_eq!(bank.audits(AuditKind::DeviceRemoved), 1);
    // A removed device answers nothing.
    let receipt = ok("pay", bank.pay(&ada, &bob.account, 100_00, "p").await);
    let (transfer, challenge, _) = challenged(&receipt);
    bank.refuses(
        "a removed device's signature",
        bank.payments.confirm(ada.id, transfer.id, &phones[1].answer(challenge)),
        |e| is_sca(e, &ScaError::Failed),
    )
    .await;
    bank.check_invariants().await;
}

/// A server that stopped between the pending transfer and its challenge, or between the answer
/// and the posting: the retry makes the challenge, the next confirmation posts.
pub async fn crash_recovery<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 1_000_00).await;
    let bob = bank.person("bob", 0).await;
    let phone = bank.phone(&ada, 7).await;
    // The pending transfer a crashed attempt left, without its challenge.
    let id = transfer_id(ada.id, &key_of("k"));
    let request = TransferRequest {
        id,
        kind: TransferKind::Internal,
        debit_account: ada.account.id,
        credit_account: bob.account.id,
        amount: eur(200_00),
        reference: None,
        hold_until: Some(bank.clock.now() + ScaRules::default().challenge_ttl()),
    };
    ok("the crashed attempt's transfer", bank.ledger().transfer(request).await);
    let retry = ok("the retry", bank.pay(&ada, &bob.account, 200_00, "k").await);
    let (transfer, challenge, _) = challenged(&retry);
    assert_eq!(
        (transfer.id, retry.replayed, challenge.expires_at),
        (id, true, transfer.hold_until.unwrap_or_else(|| bank.clock.now()))
    );
    // Answered, but the server stopped before posting.
    let _guard = bank.sca().lock(ada.id).await;
    ok("answered", bank.sca().answer(challenge, &phone.answer(challenge)).await);
    drop(_guard);
    assert_eq!(bank.posted_minor(&bob.account).await, 0);
    let confirmed =
        ok("the next confirmation posts", bank.payments.confirm(ada.id, id, &phone.answer(challenge)).await);
    assert_eq!(confirmed.transfer.state, TransferState::Posted);
    assert_eq!(bank.posted_minor(&bob.account).await, 200_00);
    bank.check_invariants().await;
}

/// Concurrent retries of one payment move the money once and count it once.
pub async fn concurrent_retries<F: PaymentsFactory>(factory: &F) {
    let bank = Arc::new(Bank::new(factory).await);
    let ada = Arc::new(bank.person("ada", 1_000_00).await);
    let bob = bank.person("bob", 0).await;
    let to = Arc::new(bob.account.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (bank, ada, to) = (Arc::clone(&bank), Arc::clone(&ada), Arc::clone(&to));
        tasks.spawn(async move { bank.pay(&ada, &to, 10_00, "same").await });
    }
    let mut ids = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let receipt = ok("a retry", joined.expect("the task ran"));
        let (transfer, exemption) = posted(&receipt);
        assert_eq!(exemption, Exemption::LowValue);
        ids.push(transfer.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one transfer");
    assert_eq!(bank.posted_minor(&bob.account).await, 10_00, "moved once");
    assert_eq!(bank.audits(AuditKind::ScaExempted), 1, "counted once");
    let state = ok("state", bank.stores.security.security_state(ada.id).await);
    assert_eq!(state.low_value_count, 1);
    bank.check_invariants().await;
}

/// This bank's IBANs in the cases (German form, bank code `500105`).
fn bank_ibans() -> crate::external::BankIbans {
    ok("bank ibans", crate::external::BankIbans::new("DE", "500105"))
}

/// The payee at another bank of the external cases.
fn erika() -> ExternalAccount {
    ok("payee", ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", Some("COBADEFFXXX")))
}

/// The remittance information of the external cases.
const INVOICE: &str = "invoice 42";

impl Bank {
    async fn pay_out(
        &self,
        p: &Person,
        to: &ExternalAccount,
        amount: Money,
        key: &str,
    ) -> Result<PayReceipt, PaymentError> {
        let request = PaymentRequest {
            from_account: p.account.id,
            payee: Payee::External(to.clone()),
            amount,
            reference: Some(INVOICE.to_owned()),
        };
        self.payments.pay(p.id, &key_of(key), &request).await
    }

    async fn record(&self, id: ServiceRecordId) -> Option<ServiceRecord> {
        ok("read record", self.stores.ledger.service_record(id).await)
    }

    async fn transfer(&self, id: TransferId) -> Option<crate::transfer::Transfer> {
        ok("read transfer", self.stores.ledger.transfer(id).await)
    }

    async fn events_after(&self, len: usize) -> Vec<EventBody> {
        let outbox = ok("outbox", self.stores.ledger.outbox_after(0, PAGE_LEN_MAX).await);
        outbox.into_iter().skip(len).map(|e| e.event.body).collect()
    }
}

fn submitted(receipt: &PayReceipt) -> (&crate::transfer::Transfer, &ServiceRecord, Option<Exemption>) {
    match &receipt.payment {
        Payment::Submitted { transfer, service, exemption } => (transfer, &**service, *exemption),
        other => panic!("expected a payment submitted to the rail, got {other:?}"),
    }
}

fn is_conflict(e: &PaymentError) -> bool {
    matches!(e, PaymentError::Ledger(crate::LedgerError::IdempotencyConflict { .. }))
}

/// The record and hold of a payment to another bank, as the rail's worker will find them.
fn assert_requested(record: &ServiceRecord, hold: &crate::transfer::Transfer, from: &Account, amount_minor: i64) {
    assert_eq!(
        (record.status, record.version, record.kind),
        (ServiceStatus::Requested, 1, ServiceKind::InterbankTransfer)
    );
    assert_eq!(
        (record.account_id, record.amount, record.transfers.as_slice()),
        (from.id, eur(amount_minor), &[hold.id][..])
    );
    let details = InterbankDetails::of(record).expect("interbank details");
    assert_eq!((details.creditor, details.remittance.as_deref()), (erika(), Some(INVOICE)));
    assert_eq!(
        (hold.kind, hold.debit_account, hold.credit_account),
        (TransferKind::Interbank, from.id, RailId::SepaCreditTransfer.clearing_account(Currency::EUR))
    );
    assert!(hold.awaits_external_party(), "the hold is pending without a deadline: {hold:?}");
}

/// A low-value payment to another bank is exempt like any payment to someone else: the hold,
/// the record (`requested`) and their events in one write, counted and audited; a retry answers
/// the same record and holds once; the key for another payment is a conflict.
pub async fn external_low_value<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 1_000_00).await;
    let bob = bank.person("bob", 0).await;
    let events = bank.money().await.outbox_len;
    let receipt = ok("pay 20.00 to another bank", bank.pay_out(&ada, &erika(), eur(20_00), "x-1").await);
    let (hold, record, exemption) = submitted(&receipt);
    assert_eq!((exemption, receipt.replayed), (Some(Exemption::LowValue), false));
    assert_eq!(hold.id, transfer_id(ada.id, &key_of("x-1")), "the hold's id is derived from customer and key");
    assert_eq!(record.id, record_id(hold.id), "the record's id is derived from the hold's");
    assert_requested(record, hold, &ada.account, 20_00);
    assert_eq!(bank.record(record.id).await.as_ref(), Some(record), "stored as answered");
    assert_eq!((bank.posted_minor(&ada.account).await, bank.held_minor(&ada.account).await), (1_000_00, 20_00));
    let new = bank.events_after(events).await;
    assert!(
        matches!(new.as_slice(), [EventBody::TransferPending { .. }, EventBody::ServiceUpdated { status: ServiceStatus::Requested, service_id, .. }] if *service_id == record.id),
        "the hold's and the record's events: {new:?}"
    );
    assert_eq!(bank.audits(AuditKind::ScaExempted), 1, "a low-value exemption is audited");
    assert_eq!(ok("state", bank.stores.security.security_state(ada.id).await).low_value_count, 1, "and counted");
    assert_eq!(
        bank.recorded.outcomes.lock().unwrap_or_else(PoisonError::into_inner).last(),
        Some(&PaymentOutcome::Submitted)
    );
    // A retry: the same record, one hold, nothing moved, not counted again.
    let before = bank.money().await;
    let again = ok("retry", bank.pay_out(&ada, &erika(), eur(20_00), "x-1").await);
    assert!(again.replayed);
    assert_eq!(submitted(&again), (hold, record, Some(Exemption::LowValue)), "the first answer again");
    assert_eq!(before, bank.money().await, "a retry moves nothing");
    assert_eq!(bank.audits(AuditKind::ScaExempted), 1);
    // The key for another payment: another amount, payee, name, or an internal payment.
    let other_iban = ok("payee", ExternalAccount::parse("FR1420041010050500013M02606", "Erika Mustermann", None));
    let other_name =
        ExternalAccount { name: ok("name", crate::external::PayeeName::parse("Max Mustermann")), ..erika() };
    bank.refuses("the key for another amount", bank.pay_out(&ada, &erika(), eur(21_00), "x-1"), is_conflict).await;
    bank.refuses("the key for another IBAN", bank.pay_out(&ada, &other_iban, eur(20_00), "x-1"), is_conflict).await;
    bank.refuses("the key for another name", bank.pay_out(&ada, &other_name, eur(20_00), "x-1"), is_conflict).await;
    bank.refuses("the key for an internal payment", bank.pay(&ada, &bob.account, 20_00, "x-1"), is_conflict).await;
    // An internal payment's key for an external one.
    ok("an internal payment", bank.pay(&ada, &bob.account, 1_00, "i-1").await);
    bank.refuses(
        "an internal key for an external payment",
        bank.pay_out(&ada, &erika(), eur(1_00), "i-1"),
        is_conflict,
    )
    .await;
    assert_eq!(bank.held_minor(&ada.account).await, 20_00, "one hold");
    bank.check_invariants().await;
}

/// Above the exemptions: a pending transfer holds the amount until the challenge expires, and
/// the challenge's `bp-sca-v2` text names amount, currency, IBAN, name and BIC. The answer
/// writes the record, which takes the pending transfer over as its hold (its deadline removed,
/// so the sweeper leaves it); a retry then answers the record.
pub async fn external_confirmed<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 1_000_00).await;
    let phone = bank.phone(&ada, 7).await;
    let receipt = ok("pay 150.00 to another bank", bank.pay_out(&ada, &erika(), eur(150_00), "x-1").await);
    let (transfer, challenge, methods) = challenged(&receipt);
    assert_eq!(methods, [ScaMethod::DeviceSignature]);
    let ttl = ScaRules::default().challenge_ttl();
    assert_eq!((transfer.state, transfer.hold_until), (TransferState::Pending, Some(bank.clock.now() + ttl)));
    assert_eq!((transfer.kind, challenge.expires_at), (TransferKind::Interbank, bank.clock.now() + ttl));
    let text = crate::sca::signing_message(challenge);
    assert!(text.starts_with("bp-sca-v2\n"), "{text}");
    for part in [
        "purpose:external_payment",
        &format!("transfer:{}", transfer.id),
        "amount:150.00",
        "currency:EUR",
        "iban:DE89370400440532013000",
        "name:Erika Mustermann",
        "bic:COBADEFFXXX",
    ] {
        assert!(text.lines().any(|l| l == part), "the text names {part}: {text}");
    }
    let id = record_id(transfer.id);
    assert_eq!(bank.record(id).await, None, "no record before the answer");
    let pending = ok("a retry before the answer", bank.pay_out(&ada, &erika(), eur(150_00), "x-1").await);
    assert_eq!((challenged(&pending).1.id, pending.replayed), (challenge.id, true));
    assert_eq!(bank.held_minor(&ada.account).await, 150_00);
    let events = bank.money().await.outbox_len;
    let confirmed = ok("confirm", bank.payments.confirm(ada.id, transfer.id, &phone.answer(challenge)).await);
    let record = confirmed.service.clone().expect("the record");
    assert_eq!(confirmed.transfer.id, transfer.id, "the pending transfer became the hold");
    assert_requested(&record, &confirmed.transfer, &ada.account, 150_00);
    assert_eq!((record.id, bank.record(id).await.as_ref()), (id, Some(&record)));
    assert_eq!(bank.held_minor(&ada.account).await, 150_00, "one hold, taken over");
    let new = bank.events_after(events).await;
    assert!(
        matches!(new.as_slice(), [EventBody::ServiceUpdated { status: ServiceStatus::Requested, service_id, .. }] if *service_id == id),
        "{new:?}"
    );
    assert_eq!(
        bank.recorded.outcomes.lock().unwrap_or_else(PoisonError::into_inner).last(),
        Some(&PaymentOutcome::Submitted)
    );
    // Confirmed once; a retry answers the record; the sweeper leaves the hold alone.
    bank.refuses("the same answer again", bank.payments.confirm(ada.id, transfer.id, &phone.answer(challenge)), |e| {
        is_closed(e, Closed::PaymentConfirmed)
    })
    .await;
    let again = ok("a retry after the answer", bank.pay_out(&ada, &erika(), eur(150_00), "x-1").await);
    assert_eq!((submitted(&again).1, submitted(&again).2, again.replayed), (&record, None, true));
    bank.advance_secs(ttl.num_seconds() + 1);
    assert_eq!(ok("expire holds", bank.ledger().expire_holds(bank.clock.now(), 10).await), 0);
    assert_eq!(bank.transfer(transfer.id).await.map(|t| t.state), Some(TransferState::Pending));
    assert_eq!(bank.held_minor(&ada.account).await, 150_00);
    bank.check_invariants().await;
}

/// An answer that signs another IBAN, name or amount, or a challenge changed in the store,
/// requests nothing: the pending transfer keeps its deadline, and the sweeper releases it.
pub async fn external_tampered<F: PaymentsFactory>(factory: &F) {
    let rules = ScaRules { challenge_failures_max: 10, ..ScaRules::default() };
    let bank = Bank::with(factory, rules, LockoutRules::default()).await;
    let ada = bank.person("ada", 1_000_00).await;
    let phone = bank.phone(&ada, 7).await;
    let receipt = ok("pay 150.00 to another bank", bank.pay_out(&ada, &erika(), eur(150_00), "x-1").await);
    let (transfer, challenge, _) = challenged(&receipt);
    let text = crate::sca::signing_message(challenge);
    let confirm = |answer: ScaAnswer| {
        let payments = bank.payments.clone();
        let (customer, id) = (ada.id, transfer.id);
        async move { payments.confirm(customer, id, &answer).await }
    };
    for (what, from, to) in [
        ("another IBAN", "iban:DE89370400440532013000", "iban:FR1420041010050500013M02606"),
        ("another name", "name:Erika Mustermann", "name:Mallory"),
        ("another amount", "amount:150.00", "amount:1.50"),
        ("another BIC", "bic:COBADEFFXXX", "bic:"),
    ] {
        let tampered = phone.answer_text(challenge, &text.replace(from, to));
        bank.refuses(what, confirm(tampered), |e| is_sca(e, &ScaError::Failed)).await;
    }
    // A challenge changed in the store: of another amount, it is not linked to the stored
    // hold; of another payee, the device's signature of the text it showed does not answer it.
    let forged_payee = ok("payee", ExternalAccount::parse("FR1420041010050500013M02606", "Mallory", None));
    let mismatch: fn(&PaymentError) -> bool = |e| matches!(e, PaymentError::ChallengeMismatch);
    let failed: fn(&PaymentError) -> bool = |e| is_sca(e, &ScaError::Failed);
    for (what, amount, payee, expected) in [
        ("a stored challenge of another amount", eur(1_50), erika(), mismatch),
        ("a stored challenge of another payee", eur(150_00), forged_payee, failed),
    ] {
        let forged = ScaChallenge {
            purpose: crate::security::ChallengePurpose::ExternalPayment { transfer_id: transfer.id, amount, payee },
            ..challenge.clone()
        };
        ok("replace the open challenge", bank.stores.security.put_challenge(forged).await);
        bank.refuses(what, confirm(phone.answer(challenge)), expected).await;
        ok("put it back", bank.stores.security.put_challenge(challenge.clone()).await);
    }
    let id = record_id(transfer.id);
    assert_eq!(bank.record(id).await, None, "nothing requested");
    let hold = bank.transfer(transfer.id).await.expect("the pending transfer");
    assert_eq!((hold.state, hold.hold_until), (TransferState::Pending, transfer.hold_until), "with its deadline");
    // The sweeper releases it once the challenge is over.
    bank.advance_secs(ScaRules::default().challenge_ttl().num_seconds() + 1);
    assert_eq!(ok("expire holds", bank.ledger().expire_holds(bank.clock.now(), 10).await), 1);
    assert_eq!(bank.held_minor(&ada.account).await, 0, "released");
    bank.refuses("the right answer, too late", confirm(phone.answer(challenge)), |e| {
        is_closed(e, Closed::PaymentEnded)
    })
    .await;
    assert_eq!(bank.record(id).await, None, "still nothing requested");
    bank.check_invariants().await;
}

/// Refused before anything is held: insufficient funds (exempt or challenged), another
/// currency than the rail's (euro), an IBAN of this bank, and a façade without a service store.
pub async fn external_refusals<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 10_00).await;
    let bob = bank.person("bob", 0).await;
    for (what, amount_minor, key) in [("exempt", 20_00, "x-small"), ("challenged", 500_00, "x-big")] {
        bank.refuses(what, bank.pay_out(&ada, &erika(), eur(amount_minor), key), |e| {
            matches!(e, PaymentError::Ledger(crate::LedgerError::InsufficientFunds { .. }))
        })
        .await;
        let hold = transfer_id(ada.id, &key_of(key));
        assert_eq!((bank.transfer(hold).await, bank.record(record_id(hold)).await), (None, None), "{what}: nothing");
    }
    assert_eq!(bank.audits(AuditKind::ScaExempted), 0, "a refused payment is not counted");
    let usd = Money::new(5_00, Currency::USD);
    bank.refuses("dollars over SEPA", bank.pay_out(&ada, &erika(), usd, "x-usd"), |e| {
        matches!(
            e,
            PaymentError::Rail(crate::external::lifecycle::RequestError::Currency { currency: Currency::USD, .. })
        )
    })
    .await;
    let ours = ExternalAccount { iban: bank_ibans().iban_of(bob.account.number), ..erika() };
    bank.refuses(
        "an IBAN of this bank",
        bank.pay_out(&ada, &ours, eur(1_00), "x-ours"),
        |e| matches!(e, PaymentError::OwnIban { number } if *number == bob.account.number),
    )
    .await;
    let internal_only = Payments::new(bank.ledger().clone(), bank.sca().clone());
    let request = PaymentRequest {
        from_account: ada.account.id,
        payee: Payee::External(erika()),
        amount: eur(1_00),
        reference: None,
    };
    bank.refuses("without a service store", internal_only.pay(ada.id, &key_of("x-none"), &request), |e| {
        matches!(e, PaymentError::NotSupported(_))
    })
    .await;
    for key in ["x-usd", "x-ours", "x-none"] {
        assert_eq!(bank.transfer(transfer_id(ada.id, &key_of(key))).await, None, "{key}: nothing held");
    }
    bank.check_invariants().await;
}

/// A server that stopped between the pending transfer and its challenge, or between the answer
/// and the record: the retry makes the challenge, the next confirmation writes the record.
pub async fn external_crash_recovery<F: PaymentsFactory>(factory: &F) {
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 1_000_00).await;
    let phone = bank.phone(&ada, 7).await;
    let id = transfer_id(ada.id, &key_of("k"));
    let request = TransferRequest {
        id,
        kind: TransferKind::Interbank,
        debit_account: ada.account.id,
        credit_account: RailId::SepaCreditTransfer.clearing_account(Currency::EUR),
        amount: eur(200_00),
        reference: Some(INVOICE.to_owned()),
        hold_until: Some(bank.clock.now() + ScaRules::default().challenge_ttl()),
    };
    ok("the crashed attempt's pending transfer", bank.ledger().transfer(request).await);
    let retry = ok("the retry", bank.pay_out(&ada, &erika(), eur(200_00), "k").await);
    let (transfer, challenge, _) = challenged(&retry);
    assert_eq!((transfer.id, retry.replayed, Some(challenge.expires_at)), (id, true, transfer.hold_until));
    assert!(crate::sca::signing_message(challenge).contains("iban:DE89370400440532013000"));
    // Answered, but the server stopped before writing the record.
    let guard = bank.sca().lock(ada.id).await;
    ok("answered", bank.sca().answer(challenge, &phone.answer(challenge)).await);
    drop(guard);
    assert_eq!(bank.record(record_id(id)).await, None);
    let confirmed = ok("the next confirmation", bank.payments.confirm(ada.id, id, &phone.answer(challenge)).await);
    let record = confirmed.service.expect("the record");
    assert_requested(&record, &confirmed.transfer, &ada.account, 200_00);
    assert_eq!(bank.held_minor(&ada.account).await, 200_00);
    bank.check_invariants().await;
}

/// Concurrent retries of one exempt payment to another bank write one record and one hold, and
/// count the exemption once.
pub async fn external_concurrent_retries<F: PaymentsFactory>(factory: &F) {
    let bank = Arc::new(Bank::new(factory).await);
    let ada = Arc::new(bank.person("ada", 1_000_00).await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (bank, ada) = (Arc::clone(&bank), Arc::clone(&ada));
        tasks.spawn(async move { bank.pay_out(&ada, &erika(), eur(10_00), "same").await });
    }
    let mut records = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let receipt = ok("a retry", joined.expect("the task ran"));
        let (_, record, exemption) = submitted(&receipt);
        assert_eq!(exemption, Some(Exemption::LowValue));
        records.push(record.id);
    }
    records.dedup();
    assert_eq!(records.len(), 1, "one record");
    assert_eq!(bank.held_minor(&ada.account).await, 10_00, "held once");
    assert_eq!(bank.audits(AuditKind::ScaExempted), 1, "counted once");
    bank.check_invariants().await;
}

/// The payee abroad of the international cases.
fn jane() -> ExternalAccount {
    ok("payee", ExternalAccount::parse("GB33BUKB20201555555555", "Jane Doe", None))
}

impl Bank {
    async fn quote(&self, p: &Person, source_minor: i64, target: Currency) -> crate::external::fx::FxQuote {
        let quote = self.payments.quote_international(p.id, p.account.id, eur(source_minor), target).await;
        ok("quote", quote)
    }

    async fn pay_abroad(
        &self,
        p: &Person,
        quote: &crate::external::fx::FxQuote,
        key: &str,
    ) -> Result<PayReceipt, PaymentError> {
        let request = crate::payments::InternationalRequest {
            from_account: p.account.id,
            quote: quote.clone(),
            payee: jane(),
            reference: Some("rent".to_owned()),
        };
        self.payments.pay_international(p.id, &key_of(key), &request).await
    }
}

/// A payment abroad: the quote's amounts are exact; paying with it holds the amount and the
/// fee until the challenge expires and opens a `bp-sca-v3` challenge naming both amounts, the
/// fee, the rate and the payee; the answer writes the record with every leg (the FX position
/// legs and the correspondent's clearing leg), taking the held ones over; a retry answers the
/// record; every currency sums to zero.
pub async fn international_confirmed<F: PaymentsFactory>(factory: &F) {
    use crate::account::SystemAccount::{Fees, FxPosition, InternationalClearing};
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 2_000_00).await;
    let phone = bank.phone(&ada, 7).await;
    let quote = bank.quote(&ada, 1_000_00, Currency::USD).await;
    assert_eq!(
        (quote.source, quote.fee, quote.debit, quote.target),
        (eur(1_000_00), eur(4_50), eur(1_004_50), Money::new(1_084_20, Currency::USD))
    );
    let receipt = ok("pay abroad", bank.pay_abroad(&ada, &quote, "fx-1").await);
    let (transfer, challenge, methods) = challenged(&receipt);
    assert_eq!(methods, [ScaMethod::DeviceSignature]);
    assert_eq!(
        (transfer.kind, transfer.amount, transfer.state),
        (TransferKind::Fx, eur(1_000_00), TransferState::Pending)
    );
    let until = (bank.clock.now() + ScaRules::default().challenge_ttl()).min(quote.expires_at);
    assert_eq!((transfer.hold_until, challenge.expires_at), (Some(until), until));
    assert_eq!(bank.held_minor(&ada.account).await, 1_004_50, "the amount and the fee are held");
    let text = crate::sca::signing_message(challenge);
    assert!(text.starts_with("bp-sca-v3\n"), "{text}");
    for part in [
        "purpose:international_payment",
        &format!("transfer:{}", transfer.id),
        "amount:1000.00",
        "currency:EUR",
        "fee:4.50",
        "total:1004.50",
        "rate:1.0842",
        "receive:1084.20",
        "receive_currency:USD",
        &format!("quote:{}", quote.id),
        "iban:GB33BUKB20201555555555",
        "name:Jane Doe",
        "bic:",
    ] {
        assert!(text.lines().any(|l| l == part), "the text names {part}: {text}");
    }
    let again = ok("a retry before the answer", bank.pay_abroad(&ada, &quote, "fx-1").await);
    assert_eq!((challenged(&again).1.id, again.replayed), (challenge.id, true));
    // Another quote under the same key is another payment.
    let other = bank.quote(&ada, 500_00, Currency::USD).await;
    bank.refuses("another quote, same key", bank.pay_abroad(&ada, &other, "fx-1"), is_conflict).await;

    let confirmed = ok("confirm", bank.payments.confirm(ada.id, transfer.id, &phone.answer(challenge)).await);
    let record = confirmed.service.clone().expect("the record");
    assert_eq!(
        (record.kind, record.status, record.transfers.len()),
        (ServiceKind::InternationalTransfer, ServiceStatus::Requested, 3)
    );
    assert_eq!(record.transfers[0], transfer.id);
    for id in &record.transfers {
        let leg = bank.transfer(*id).await.expect("a leg");
        assert!(leg.awaits_external_party(), "every leg waits for the rail: {leg:?}");
    }
    let details = crate::external::fx::InternationalDetails::of(&record).expect("details");
    assert_eq!((details.quote, details.creditor), (quote.clone(), jane()));
    assert_eq!(crate::external::fx::rail_amount(&record), Money::new(1_084_20, Currency::USD));
    assert_eq!(bank.held_minor(&ada.account).await, 1_004_50, "held once, taken over");
    let fx_usd = ok("read", bank.ledger().account(FxPosition.id(Currency::USD)).await);
    let clearing_usd = ok("read", bank.ledger().account(InternationalClearing.id(Currency::USD)).await);
    assert_eq!(
        (fx_usd.held_minor, clearing_usd.held_minor),
        (1_084_20, 0),
        "the target leg is held on the FX position"
    );
    assert!(ok("read", bank.ledger().account(Fees.id(Currency::EUR)).await).posted_minor == 0);
    let replay = ok("a retry after the answer", bank.pay_abroad(&ada, &quote, "fx-1").await);
    assert_eq!((submitted(&replay).1, replay.replayed), (&record, true));
    // Even after the quote's expiry, the accepted payment stands.
    bank.advance_secs(super::fx::QUOTE_TTL_S + 1);
    assert_eq!(ok("expire holds", bank.ledger().expire_holds(bank.clock.now(), 10).await), 0);
    assert_eq!(bank.held_minor(&ada.account).await, 1_004_50);
    for total in ok("totals", bank.stores.ledger.totals().await) {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }
    bank.check_invariants().await;
}

/// A quote that is unknown, changed or expired is refused and holds nothing; a fee that does
/// not fit the balance holds nothing; a quote that expires before the answer releases the legs
/// and writes no record.
pub async fn international_refusals<F: PaymentsFactory>(factory: &F) {
    use crate::external::fx::{QuoteError, QuoteId};
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 1_002_00).await;
    let phone = bank.phone(&ada, 7).await;
    let quote = bank.quote(&ada, 1_000_00, Currency::USD).await;
    let rate = |r: &str| ok("rate", crate::rate::Rate::parse(r));
    let tampered = [
        crate::external::fx::FxQuote { rate: rate("1.2"), ..quote.clone() },
        crate::external::fx::FxQuote { target: Money::new(1_200_00, Currency::USD), ..quote.clone() },
        crate::external::fx::FxQuote { expires_at: quote.expires_at + TimeDelta::hours(1), ..quote.clone() },
    ];
    for (n, q) in tampered.iter().enumerate() {
        bank.refuses("a changed quote", bank.pay_abroad(&ada, q, &format!("t-{n}")), |e| {
            matches!(e, PaymentError::Quote(QuoteError::Changed))
        })
        .await;
    }
    let unknown = crate::external::fx::FxQuote { id: ok("id", QuoteId::parse("q-404")), ..quote.clone() };
    bank.refuses("an unknown quote", bank.pay_abroad(&ada, &unknown, "t-u"), |e| {
        matches!(e, PaymentError::Quote(QuoteError::Unknown))
    })
    .await;
    // The amount fits the balance (1,002.00) but not with the fee (4.50): nothing stays held.
    bank.refuses("no money for the fee", bank.pay_abroad(&ada, &quote, "t-fee"), |e| {
        matches!(e, PaymentError::Ledger(crate::LedgerError::InsufficientFunds { .. }))
    })
    .await;
    assert_eq!(bank.held_minor(&ada.account).await, 0, "nothing was held");
    let bea = bank.person("bea", 10_00).await;
    let before = bank.money().await;
    bank.refuses(
        "dollars from a euro account",
        bank.payments.quote_international(ada.id, ada.account.id, Money::new(1_00, Currency::USD), Currency::GBP),
        |e| matches!(e, PaymentError::Ledger(crate::LedgerError::CurrencyMismatch { .. })),
    )
    .await;
    bank.refuses(
        "euro to euro",
        bank.payments.quote_international(ada.id, ada.account.id, eur(1_00), Currency::EUR),
        |e| matches!(e, PaymentError::Quote(QuoteError::SameCurrency)),
    )
    .await;
    bank.refuses(
        "another customer's account",
        bank.payments.quote_international(bea.id, ada.account.id, eur(1_00), Currency::USD),
        |e| matches!(e, PaymentError::NotFound("account")),
    )
    .await;

    // Expired before it is paid with.
    let small = bank.quote(&ada, 100_00, Currency::GBP).await;
    bank.advance_secs(super::fx::QUOTE_TTL_S);
    bank.refuses("an expired quote", bank.pay_abroad(&ada, &small, "t-exp"), |e| {
        matches!(e, PaymentError::Quote(QuoteError::Expired { .. }))
    })
    .await;
    assert_eq!(bank.money().await, before, "no refusal moved or held anything");

    // Expired between the payment and the answer: the legs are released, no record is written.
    let small = bank.quote(&ada, 100_00, Currency::JPY).await;
    let receipt = ok("pay abroad", bank.pay_abroad(&ada, &small, "t-late").await);
    let (transfer, challenge, _) = challenged(&receipt);
    assert_eq!(bank.held_minor(&ada.account).await, 101_00);
    bank.advance_secs(super::fx::QUOTE_TTL_S - 1);
    let answer = phone.answer(challenge);
    bank.advance_secs(1);
    // Refused, and (unlike a refusal that changes nothing) the legs are released at once.
    let late = bank.payments.confirm(ada.id, transfer.id, &answer).await;
    assert!(matches!(late, Err(PaymentError::Quote(QuoteError::Expired { .. }))), "{late:?}");
    assert_eq!(bank.held_minor(&ada.account).await, 0, "every leg released");
    assert_eq!(bank.record(record_id(transfer.id)).await, None);
    bank.check_invariants().await;
}

/// A quote converts once: of two payments held with the same quote, the first answered takes
/// it and the other's answer is refused with every leg released; a later payment with it,
/// also another customer's, is refused before anything is held; the payment that took it still
/// answers its retries.
pub async fn international_quote_once<F: PaymentsFactory>(factory: &F) {
    use crate::external::fx::QuoteError;
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 3_000_00).await;
    let bob = bank.person("bob", 3_000_00).await;
    let phone = bank.phone(&ada, 7).await;
    let quote = bank.quote(&ada, 1_000_00, Currency::USD).await;
    let first = ok("pay abroad", bank.pay_abroad(&ada, &quote, "q-1").await);
    let second = ok("pay abroad again, another key", bank.pay_abroad(&ada, &quote, "q-2").await);
    assert_eq!(bank.held_minor(&ada.account).await, 2 * 1_004_50, "both are held until answered");
    let (t2, c2, _) = challenged(&second);
    let taken = ok("confirm the second", bank.payments.confirm(ada.id, t2.id, &phone.answer(c2)).await);
    let record = taken.service.expect("the record");
    let (t1, c1, _) = challenged(&first);
    let refused = bank.payments.confirm(ada.id, t1.id, &phone.answer(c1)).await;
    assert!(matches!(refused, Err(PaymentError::Quote(QuoteError::Used))), "{refused:?}");
    assert_eq!(bank.held_minor(&ada.account).await, 1_004_50, "the refused payment's legs are released");
    assert_eq!(bank.record(record_id(t1.id)).await, None, "and it has no record");

    bank.refuses("a third payment with the quote", bank.pay_abroad(&ada, &quote, "q-3"), |e| {
        matches!(e, PaymentError::Quote(QuoteError::Used))
    })
    .await;
    bank.refuses("another customer with the quote", bank.pay_abroad(&bob, &quote, "q-bob"), |e| {
        matches!(e, PaymentError::Quote(QuoteError::Used))
    })
    .await;
    let replay = ok("a retry of the payment that took it", bank.pay_abroad(&ada, &quote, "q-2").await);
    assert_eq!((submitted(&replay).1, replay.replayed), (&record, true));
    for total in ok("totals", bank.stores.ledger.totals().await) {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }
    bank.check_invariants().await;
}

/// An offered loan of `p`: `principal_minor` EUR over 12 months at 4.9 %, a 12.00 fee, applied
/// for and decided through the loan's own transitions, written by the store.
async fn offered_loan(bank: &Bank, p: &Person, principal_minor: i64, key: &str) -> ServiceRecord {
    use crate::external::loan::{self, LoanDecision, LoanInput, LoanPolicy, NewLoan};
    let key = key_of(key);
    let new = NewLoan {
        id: loan::loan_id(p.id, &key),
        customer: p.id,
        account: p.account.id,
        amount: eur(principal_minor),
        term_months: 12,
        purpose: "a bicycle".to_owned(),
    };
    let store = &bank.stores.ledger;
    let now = bank.clock.now();
    let mut record = ok("apply", store.request(ok("application", loan::apply(&new, now))).await).record;
    let decision = LoanDecision::Approved {
        annual_rate: ok("rate", crate::rate::Rate::parse("0.049")),
        fee: eur(12_00),
        term_months: 12,
    };
    for input in [LoanInput::Due, LoanInput::Decided(decision)] {
        let t = ok("transition", loan::transition(&record, &input, now, &LoanPolicy::default(), 0));
        record = ok("write", store.apply(record.id, record.version, t).await);
    }
    assert_eq!(record.status, ServiceStatus::Offered);
    record
}

/// Accepting a loan takes SCA ([`Payments::challenge_loan_offer`], then
/// [`Payments::confirm_loan_offer`]): the one challenge per loan names the whole offer
/// (`bp-sca-v4`) and expires with the offer at the latest; another customer's loan is not
/// found; a challenge whose offer no longer matches the loan is refused; above the TOTP limit a
/// device is needed; a wrong signature is refused, the right one spent once; once answered,
/// opening again is `Answered`, and confirming the accepted loan again is a replay. Nothing
/// moves: the caller accepts.
pub async fn loan_acceptance<F: PaymentsFactory>(factory: &F) {
    use crate::external::loan::{self, LoanDetails, LoanInput, LoanPolicy, LoanTransitionError};
    let bank = Bank::new(factory).await;
    let ada = bank.person("ada", 100_00).await;
    let bob = bank.person("bob", 100_00).await;
    let loan = offered_loan(&bank, &ada, 1_200_00, "loan-1").await;
    let offer = LoanDetails::of(&loan).and_then(|d| d.offer).expect("an offer");

    bank.refuses("another customer's loan", bank.payments.challenge_loan_offer(bob.id, &loan), |e| {
        matches!(e, PaymentError::NotFound("loan"))
    })
    .await;
    let opened = ok("challenge", bank.payments.challenge_loan_offer(ada.id, &loan).await);
    assert!(opened.methods.is_empty(), "1,200.00 is above the TOTP limit: a device is needed");
    let until = (bank.clock.now() + ScaRules::default().challenge_ttl()).min(offer.expires_at);
    assert_eq!(opened.challenge.expires_at, until);
    let text = crate::sca::signing_message(&opened.challenge);
    assert!(text.starts_with("bp-sca-v4\n"), "{text}");
    for part in [
        format!("loan:{}", loan.id),
        "amount:1200.00".to_owned(),
        format!("account:{}", ada.account.number),
        "rate:0.049".to_owned(),
        "fee:12.00".to_owned(),
        format!("instalment:{}", offer.instalment.to_decimal_string()),
    ] {
        assert!(text.lines().any(|l| l == part), "{part:?} in {text}");
    }
    let phone = bank.phone(&ada, 9).await;
    let renewed = ok("renewed", bank.payments.challenge_loan_offer(ada.id, &loan).await);
    assert_eq!(renewed.challenge.id, opened.challenge.id, "one challenge per loan, renewed while open");
    assert_eq!(renewed.methods, [ScaMethod::DeviceSignature]);

    // An offer other than the one signed (the loan's record changed since) is not authorized.
    let mut changed = loan.clone();
    let mut details = LoanDetails::of(&loan).expect("details");
    details.offer = Some(loan::LoanOffer { fee: eur(0), ..offer.clone() });
    let serde_json::Value::Object(map) = ok("details", serde_json::to_value(&details)) else { panic!("an object") };
    changed.details = map;
    let right = phone.answer(&renewed.challenge);
    bank.refuses("a changed offer", bank.payments.confirm_loan_offer(ada.id, &changed, &right), |e| {
        matches!(e, PaymentError::ChallengeMismatch)
    })
    .await;
    let wrong = phone.answer_text(&renewed.challenge, &text.replace("amount:1200.00", "amount:12.00"));
    bank.refuses("a signature of another text", bank.payments.confirm_loan_offer(ada.id, &loan, &wrong), |e| {
        matches!(e, PaymentError::Sca(ScaError::Failed))
    })
    .await;
    bank.refuses("bob confirming", bank.payments.confirm_loan_offer(bob.id, &loan, &right), |e| {
        matches!(e, PaymentError::NotFound(_))
    })
    .await;
    let answered = ok("confirmed", bank.payments.confirm_loan_offer(ada.id, &loan, &right).await);
    assert!(matches!(
        answered.state,
        crate::security::ChallengeState::Answered { method: ScaMethod::DeviceSignature, .. }
    ));
    // Answered, not yet accepted (the caller stopped in between): confirming again goes ahead,
    // opening again says it is answered.
    ok("again before acceptance", bank.payments.confirm_loan_offer(ada.id, &loan, &right).await);
    bank.refuses("opening an answered one", bank.payments.challenge_loan_offer(ada.id, &loan), |e| {
        is_sca(e, &ScaError::Closed(Closed::Answered))
    })
    .await;
    let t = ok("accept", loan::transition(&loan, &LoanInput::Accept, bank.clock.now(), &LoanPolicy::default(), 0));
    let active = ok("write", bank.stores.ledger.apply(loan.id, loan.version, t).await);
    ok("a retry once accepted", bank.payments.confirm_loan_offer(ada.id, &active, &right).await);
    bank.refuses("opening once accepted", bank.payments.challenge_loan_offer(ada.id, &active), |e| {
        matches!(e, PaymentError::Loan(LoanTransitionError::NotOffered { .. }))
    })
    .await;

    // An offer that expired cannot be challenged.
    let late = offered_loan(&bank, &ada, 400_00, "loan-2").await;
    let expires = LoanDetails::of(&late).and_then(|d| d.offer).expect("offer").expires_at;
    bank.clock.set(expires);
    bank.refuses("an expired offer", bank.payments.challenge_loan_offer(ada.id, &late), |e| {
        matches!(e, PaymentError::Loan(LoanTransitionError::OfferExpired { .. }))
    })
    .await;
    bank.check_invariants().await;
}
