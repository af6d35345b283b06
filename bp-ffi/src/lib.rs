//! bp-ffi: the mobile client SDK of bp, for Android (Kotlin), iOS (Swift) and Python, through
//! UniFFI. One Rust client ([`client::BpClient`], async, on tokio and reqwest) does what is easy
//! to get wrong twice: sign-in for native apps (RFC 8252: PKCE S256, `state`, `nonce`, `iss`,
//! the id token verified against the issuer's keys), DPoP-bound tokens (RFC 9449) with
//! rotating refresh, strong customer authentication with a device key, payments whose
//! idempotency key survives app restarts, and live events that resume where they stopped.
//! This file is the thin exported layer: [`BpSdk`] and the records and errors the apps see.
//!
//! The app provides four things ([`host`]): a [`TokenStore`] (Keystore / Keychain), two
//! [`DeviceSigner`]s — the DPoP key, used on every request without a prompt, and the SCA key,
//! unlocked by the customer's biometric for each payment — and an [`AppStore`] for payments in
//! flight; live events go to an [`EventListener`].
//!
//! **TLS.** HTTPS is rustls on `ring` with the Mozilla root certificates compiled in
//! (webpki-roots). That builds for every Android and iOS target with no C toolchain beyond
//! the NDK's linker, needs no JNI initialisation (rustls-platform-verifier does, and its AAR
//! is not on Maven Central) and no aws-lc-rs (cmake). The cost: the platform's trust store is
//! not consulted, so a CA the user or an MDM profile installed is not trusted — an
//! intercepting corporate proxy breaks the app, which for a bank's app is the safer default.
//!
//! **Panics** unwind (no `panic = "abort"`), so UniFFI turns one into an error of the call
//! rather than killing the app.

// UniFFI's scaffolding (the exported `extern "C"` functions) is unsafe code expanded here; the
// hand-written modules forbid unsafe code themselves.
uniffi::setup_scaffolding!();

mod client;
mod error;
mod events;
mod host;
mod keys;
mod payments;
mod requests;
mod views;

use std::sync::Arc;

use bp_core::api::{
    AccountList, DeviceList, DeviceResponse, LoanAcceptance, LoanView, Profile as ProfileWire, ServiceList,
    TransactionPage, TransferResponse, TransferView,
};

pub use client::{ClientConfig, DEFAULT_SCOPE};
pub use error::BpError;
pub use events::{EventStream, LiveEvent, StreamEnd, StreamStatus};
pub use host::{AppStore, DeviceSigner, EventListener, HostError, TokenStore};
pub use keys::SoftwareSigner;
pub use views::*;

use crate::client::BpClient;
use crate::error::Error;
use crate::payments::{DEVICE_KEY, Sent, money, reference, summary, transfer_body};

type Result<T> = std::result::Result<T, BpError>;

/// The SDK: one per bank and app installation.
#[derive(Debug, uniffi::Object)]
pub struct BpSdk {
    client: Arc<BpClient>,
    /// Loan offers being accepted: the challenge and the lines it must hold, by loan id.
    loan_offers: std::sync::Mutex<LoanOffers>,
}

type LoanOffers = std::collections::HashMap<String, (bp_core::api::ChallengeView, Vec<(String, String)>)>;

#[uniffi::export(async_runtime = "tokio")]
impl BpSdk {
    /// An SDK for the bank at `config.base_url` with the app's handles. Sends nothing: the
    /// first call that needs the server reads its OpenID configuration.
    #[uniffi::constructor]
    pub fn new(
        config: ClientConfig,
        tokens: Arc<dyn TokenStore>,
        dpop_key: Arc<dyn DeviceSigner>,
        sca_key: Arc<dyn DeviceSigner>,
        store: Arc<dyn AppStore>,
    ) -> Result<Arc<Self>> {
        let host = host::Host { tokens, dpop_key, sca_key, store };
        let client = Arc::new(BpClient::new(config, host)?);
        Ok(Arc::new(Self { client, loan_offers: std::sync::Mutex::new(LoanOffers::new()) }))
    }

    // ----- sign-in -----

    /// The URL to open in the system browser to sign in (PKCE, `state` and `nonce` are kept
    /// until [`BpSdk::complete_sign_in`]).
    pub async fn begin_sign_in(&self) -> Result<String> {
        Ok(self.client.begin_sign_in().await?)
    }

    /// Completes the sign-in from the redirect URL the app received; returns the customer's id.
    pub async fn complete_sign_in(&self, redirect_url: String) -> Result<String> {
        Ok(self.client.complete_sign_in(&redirect_url).await?)
    }

    /// Whether a session is saved.
    pub async fn is_signed_in(&self) -> Result<bool> {
        Ok(self.client.is_signed_in().await?)
    }

    /// Refreshes the tokens now (they are refreshed by themselves before they expire).
    pub async fn refresh(&self) -> Result<()> {
        Ok(self.client.refresh_now().await?)
    }

    /// Signs out: revokes the session at the bank and forgets it here.
    pub async fn sign_out(&self) -> Result<()> {
        Ok(self.client.sign_out().await?)
    }

    // ----- profile and accounts -----

    /// The customer's profile (FR4).
    pub async fn profile(&self) -> Result<Profile> {
        let wire: ProfileWire = self.client.get("/v1/me").await?;
        Ok(Profile::from(wire))
    }

    /// The customer's photo (JPEG or PNG bytes), or `None` without one.
    pub async fn photo(&self) -> Result<Option<Vec<u8>>> {
        let sent = self.client.send(reqwest::Method::GET, "/v1/me/photo", client::Body::None, None).await;
        match sent {
            Ok(response) => Ok(Some(client::read_body(response).await?)),
            Err(e) if e.problem_slug() == Some("not-found") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The customer's accounts with their balances.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        let list: AccountList = self.client.get("/v1/accounts").await?;
        Ok(list.accounts.into_iter().map(Account::from).collect())
    }

    /// A page of an account's history, newest first, filtered.
    pub async fn history(&self, account_id: String, filter: HistoryFilter) -> Result<HistoryPage> {
        let path = format!("/v1/accounts/{}/transactions?{}", views::path_id(&account_id)?, filter.query()?);
        let page: TransactionPage = self.client.get(&path).await?;
        Ok(HistoryPage::from(page))
    }

    // ----- devices -----

    /// Registers this phone's SCA key: returns the challenge that confirms it (a first device
    /// is confirmed by a TOTP code of the customer's authenticator).
    pub async fn register_device(&self, name: String) -> Result<DeviceEnrolment> {
        let customer = self.client.customer_id().await?;
        let public_key = keys::b64(&self.client.host.sca_key.public_key().map_err(Error::from)?);
        let message = bp_core::api::device_registration_message(
            customer.parse().map_err(|_| Error::Corrupt("the session's customer id".to_owned()))?,
            &public_key,
        );
        let proof = self.client.host.sca_key.sign(message.into_bytes()).map_err(Error::from)?;
        let body = serde_json::json!({ "name": name, "public_key": public_key, "proof": keys::b64(&proof) });
        let answer: DeviceResponse = self.client.post("/v1/devices", &body, None).await?;
        let sca = answer.sca.ok_or(Error::Decode("a device registration without its challenge".to_owned()))?;
        Ok(DeviceEnrolment {
            device_id: answer.device.id.to_string(),
            challenge_id: sca.id.to_string(),
            methods: sca.methods.iter().map(views::wire_name).collect(),
            summary: summary(&sca.message),
        })
    }

    /// Confirms the registration with a TOTP code; the device's id is kept in the `AppStore`.
    pub async fn confirm_device_with_totp(&self, enrolment: DeviceEnrolment, code: String) -> Result<Device> {
        let body = serde_json::json!({ "method": "totp", "challenge_id": enrolment.challenge_id, "code": code });
        let path = format!("/v1/devices/{}/confirm", views::path_id(&enrolment.device_id)?);
        let answer: DeviceResponse = self.client.post(&path, &body, None).await?;
        self.client.host.store.put(DEVICE_KEY.to_owned(), answer.device.id.to_string()).map_err(Error::from)?;
        Ok(Device::from(answer.device))
    }

    /// The device registered on this phone, if any.
    pub fn device_id(&self) -> Result<Option<String>> {
        Ok(self.client.device_id()?)
    }

    /// The customer's registered devices.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        let list: DeviceList = self.client.get("/v1/devices").await?;
        Ok(list.devices.into_iter().map(Device::from).collect())
    }

    // ----- payments -----

    /// Prepares a payment to another account of the bank (FR5): stores it with a new
    /// idempotency key in the `AppStore`; nothing is sent. Then [`BpSdk::send_payment`].
    pub fn prepare_transfer(&self, draft: TransferDraft) -> Result<PaymentIntent> {
        let amount = money(draft.amount.amount_minor, &draft.amount.currency)?;
        let to = bp_core::account_number::AccountNumber::parse(&draft.to_account_number)
            .map_err(|_| Error::Invalid { field: "to_account_number", reason: "not an account number".to_owned() })?;
        let from = views::path_id(&draft.from_account_id)?;
        let reference = reference(draft.reference)?;
        let body = transfer_body(from, &to.to_string(), &amount, &reference);
        let expect = views::expect(&amount, &[("payee", to.to_string())]);
        let intent = self.client.store_intent("/v1/transfers", body, amount, to.to_string(), expect)?;
        Ok(PaymentIntent::from(&intent))
    }

    /// Prepares a payment to another bank (SEPA, FR6), as [`BpSdk::prepare_transfer`].
    pub fn prepare_interbank(&self, draft: InterbankDraft) -> Result<PaymentIntent> {
        let amount = money(draft.amount.amount_minor, &draft.amount.currency)?;
        let iban = bp_core::iban::Iban::parse(&draft.to_iban)
            .map_err(|_| Error::Invalid { field: "to_iban", reason: "not a valid IBAN".to_owned() })?;
        let mut body = serde_json::json!({
            "from_account": views::path_id(&draft.from_account_id)?,
            "to_iban": iban.as_str(),
            "to_name": draft.to_name,
            "amount": amount,
        });
        views::put_optional(&mut body, "to_bic", draft.to_bic);
        views::put_optional(&mut body, "reference", reference(draft.reference)?);
        let expect = views::expect(&amount, &[("iban", iban.as_str().to_owned())]);
        let payee = format!("{} {}", draft.to_name, iban.as_str());
        let intent = self.client.store_intent("/v1/interbank-transfers", body, amount, payee, expect)?;
        Ok(PaymentIntent::from(&intent))
    }

    /// A quote for paying abroad: `amount` of the account's currency converted into
    /// `target_currency` (the fee on top); valid until its `expires_at`.
    pub async fn fx_quote(&self, from_account_id: String, amount: Amount, target_currency: String) -> Result<FxQuote> {
        let amount = money(amount.amount_minor, &amount.currency)?;
        let target = bp_core::money::Currency::from_code(&target_currency)
            .map_err(|_| Error::Invalid { field: "target_currency", reason: "not a currency".to_owned() })?;
        let body = serde_json::json!({
            "from_account": views::path_id(&from_account_id)?,
            "amount": amount,
            "target_currency": target,
        });
        let quote: bp_core::external::fx::FxQuote = self.client.post("/v1/fx-quotes", &body, None).await?;
        FxQuote::of(&quote)
    }

    /// Prepares a payment abroad at `draft.quote`, as [`BpSdk::prepare_transfer`].
    pub fn prepare_international(&self, draft: InternationalDraft) -> Result<PaymentIntent> {
        let quote: bp_core::external::fx::FxQuote = serde_json::from_str(&draft.quote.quote)
            .map_err(|_| Error::Invalid { field: "quote", reason: "not a quote of this SDK".to_owned() })?;
        let iban = bp_core::iban::Iban::parse(&draft.to_iban)
            .map_err(|_| Error::Invalid { field: "to_iban", reason: "not a valid IBAN".to_owned() })?;
        let mut body = serde_json::json!({
            "from_account": views::path_id(&draft.from_account_id)?,
            "quote": quote,
            "to_iban": iban.as_str(),
            "to_name": draft.to_name,
        });
        views::put_optional(&mut body, "to_bic", draft.to_bic);
        views::put_optional(&mut body, "reference", reference(draft.reference)?);
        let expect =
            views::expect(&quote.source, &[("iban", iban.as_str().to_owned()), ("quote", quote.id.to_string())]);
        let payee = format!("{} {}", draft.to_name, iban.as_str());
        let intent = self.client.store_intent("/v1/international-transfers", body, quote.source, payee, expect)?;
        Ok(PaymentIntent::from(&intent))
    }

    /// Sends the prepared payment `payment_id`, or sends it again after a failure (same
    /// idempotency key: it moves money once). Returns the outcome, or the text the customer must
    /// confirm; a final answer removes it from the payments in flight.
    pub async fn send_payment(&self, payment_id: String) -> Result<PaymentOutcome> {
        Ok(match self.client.send_intent(&payment_id).await? {
            Sent::Done(response) => PaymentOutcome::of_done(&response),
            Sent::NeedsConfirmation(intent) => PaymentOutcome::of_pending(&intent),
        })
    }

    /// The customer read the confirmation text of `payment_id` and confirmed it: signs the
    /// challenge with the SCA key (the app's biometric prompt) and sends the answer. The answer
    /// is `Done` (posted, or handed to the rail for a payment to another bank).
    pub async fn confirm_payment(&self, payment_id: String) -> Result<PaymentOutcome> {
        Ok(PaymentOutcome::of_done(&self.client.confirm_intent(&payment_id).await?))
    }

    /// The payments in flight, oldest first (to resume after a restart).
    pub fn pending_payments(&self) -> Result<Vec<PaymentIntent>> {
        Ok(self.client.intents()?.iter().map(PaymentIntent::from).collect())
    }

    /// Gives up the payment `payment_id` here (a pending one is voided by the bank when its
    /// challenge expires).
    pub fn forget_payment(&self, payment_id: String) -> Result<()> {
        Ok(self.client.forget_intent(&payment_id)?)
    }

    /// One transfer.
    pub async fn transfer(&self, transfer_id: String) -> Result<Transfer> {
        let view: TransferView = self.client.get(&format!("/v1/transfers/{}", views::path_id(&transfer_id)?)).await?;
        Ok(Transfer::from(view))
    }

    // ----- external services -----

    /// The customer's external services (FR3/FR6): interbank and international payments and
    /// loans, newest first; `kind` filters (`interbank_transfer`, `international_transfer`,
    /// `loan`).
    pub async fn services(&self, kind: Option<String>, cursor: Option<String>) -> Result<ServicePage> {
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            kind.map(|k| query.append_pair("kind", &k));
            cursor.map(|c| query.append_pair("cursor", &c));
            query.finish()
        };
        let list: ServiceList = self.client.get(&format!("/v1/services?{query}")).await?;
        Ok(ServicePage::from(list))
    }

    /// Applies for a loan; the provider's offer arrives on the loan (`loan`) shortly after.
    pub async fn apply_for_loan(&self, application: LoanApplication) -> Result<Loan> {
        let amount = money(application.amount.amount_minor, &application.amount.currency)?;
        let body = serde_json::json!({
            "account": views::path_id(&application.account_id)?,
            "amount": amount,
            "term_months": application.term_months,
            "purpose": application.purpose,
        });
        // The key is stored with the application before it is sent: the same application
        // made again (after a lost answer, or an app restart) is the same loan, not a second.
        let what = requests::loan_application(&body);
        let view: LoanView = match self.client.post_once(&what, "/v1/loans", body.clone()).await {
            Err(Error::Network(_)) => self.client.post_once(&what, "/v1/loans", body).await?,
            other => other?,
        };
        Ok(Loan::from(view))
    }

    /// Repays a loan early, in part (the remaining instalments are recomputed, same count) or in
    /// full (the loan closes), from the loan's account; no confirmation is asked. Like a
    /// payment, the repayment's idempotency key is stored before it is sent, and the same
    /// repayment made again after a failure or an app restart is sent with it: money moves once.
    pub async fn repay_loan(&self, loan_id: String, repayment: LoanRepayment) -> Result<Loan> {
        let loan_path = format!("/v1/loans/{}", views::path_id(&loan_id)?);
        let path = format!("{loan_path}/repayments");
        let amount = match &repayment {
            LoanRepayment::Partial { amount } => Some(money(amount.amount_minor, &amount.currency)?),
            LoanRepayment::Full => None,
        };
        let what = requests::loan_repayment(&loan_id, amount.as_ref());
        let request = match self.client.keyed_request(&what)? {
            Some(stored) => stored,
            None => {
                let amount = match amount {
                    Some(amount) => amount,
                    // In full: what is owed now, read before the first attempt only.
                    None => self.client.get::<LoanView>(&loan_path).await?.loan.outstanding,
                };
                self.client.store_request(&what, &path, serde_json::json!({ "amount": amount }))?
            }
        };
        let view: LoanView = self.client.send_request(&what, &request).await?;
        Ok(Loan::from(view))
    }

    /// Begins accepting a loan's offer: returns what the customer confirms (principal, term,
    /// rate, instalment, interest, fee, total); nothing is signed until
    /// [`BpSdk::confirm_loan_offer`]. Calling it again asks for a new challenge.
    pub async fn accept_loan_offer(&self, loan_id: String) -> Result<Confirmation> {
        let path = format!("/v1/loans/{}/accept", views::path_id(&loan_id)?);
        let acceptance: LoanAcceptance = self.client.post(&path, &serde_json::json!({}), None).await?;
        let expect = views::expect(
            &acceptance.loan.amount,
            &[("loan", loan_id.clone()), ("purpose", "loan_acceptance".to_owned())],
        );
        let confirmation = Confirmation {
            summary: summary(&acceptance.sca.message),
            text: acceptance.sca.message.clone(),
            expires_at: acceptance.sca.expires_at.to_rfc3339(),
        };
        self.loan_offers.lock().expect("loan offers lock").insert(loan_id, (acceptance.sca, expect));
        Ok(confirmation)
    }

    /// The customer confirmed the loan's offer: signs its challenge with the SCA key (the
    /// biometric prompt) and sends the answer; the loan is then accepted and disbursed.
    pub async fn confirm_loan_offer(&self, loan_id: String) -> Result<Loan> {
        let pending = self.loan_offers.lock().expect("loan offers lock").remove(&loan_id);
        let (challenge, expect) = pending.ok_or(Error::Invalid {
            field: "loan_id",
            reason: "no offer of this loan waits for confirmation: accept it first".to_owned(),
        })?;
        payments::check_linked(&challenge.message, &expect)?;
        let answer = self.client.sign_challenge(&challenge).await?;
        let body = serde_json::to_value(&answer).map_err(|e| Error::Corrupt(e.to_string()))?;
        let path = format!("/v1/loans/{}/accept/confirm", views::path_id(&loan_id)?);
        let view: LoanView = self.client.post(&path, &body, None).await?;
        Ok(Loan::from(view))
    }

    /// A loan with its offer and schedule.
    pub async fn loan(&self, loan_id: String) -> Result<Loan> {
        let view: LoanView = self.client.get(&format!("/v1/loans/{}", views::path_id(&loan_id)?)).await?;
        Ok(Loan::from(view))
    }

    // ----- live events -----

    /// Starts the live events of the customer's accounts, resuming after `last_event_id` when
    /// given; returns the handle that stops them.
    pub async fn watch_events(
        &self,
        listener: Arc<dyn EventListener>,
        last_event_id: Option<String>,
    ) -> Arc<EventStream> {
        events::start(self.client.clone(), listener, last_event_id)
    }
}

impl PaymentOutcome {
    fn of_done(response: &TransferResponse) -> Self {
        PaymentOutcome::Done {
            transfer: Transfer::from(response.transfer.clone()),
            exemption: response.exemption.as_ref().map(views::wire_name),
            service_id: response.service.map(|s| s.to_string()),
        }
    }

    fn of_pending(intent: &payments::Intent) -> Self {
        let challenge = intent.challenge.as_ref().expect("a pending payment has its challenge");
        PaymentOutcome::NeedsConfirmation {
            payment_id: intent.id.clone(),
            transfer_id: intent.transfer_id.clone().unwrap_or_default(),
            confirmation: Confirmation {
                summary: summary(&challenge.message),
                text: challenge.message.clone(),
                expires_at: challenge.expires_at.to_rfc3339(),
            },
        }
    }
}
