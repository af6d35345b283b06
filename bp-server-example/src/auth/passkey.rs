//! Passkeys (WebAuthn, with `webauthn-rs`): the Relying Party's ceremonies. Registering one
//! (options, then the authenticator's credential checked: user verification required) for the
//! v1 routes, and signing in with one on the sign-in page: the customer types their username,
//! the page's script (`/oauth2/passkey.js`, same origin, no inline script) asks for options bound
//! to the sign-in in progress, the browser's `navigator.credentials.get` answers, and the answer
//! is posted as a form. A passkey with user verification is two factors at once (possession of
//! the authenticator's key, and the biometric or PIN that unlocks it) and phishing-resistant (the
//! authenticator signs only for this site's RP ID, and the browser names the origin it ran on).
//!
//! bp-core keeps the records and the rules (bound, recent sign-in, audit, lockout reset):
//! [`bp_core::sca::Sca`]. Ceremonies in progress live here, in memory, bounded, expiring, spent
//! by their first answer.
//!
//! The RP ID is the host of the server's public URL (`server.public_url`, else the listen
//! address). WebAuthn needs a domain: with an IP literal every passkey route answers the problem
//! `passkeys-unavailable` (the demo is reached as `http://localhost:PORT`, a secure context).
//!
//! Sign-in options are the same for every username (no `allowCredentials`: the credentials are
//! discoverable), so they tell nothing about whether a username exists or has passkeys; the
//! answer is checked against the typed username's passkeys, and every refusal reads the same.

use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use bp_core::api::{PasskeyCredential, PasskeyRegistration};
use bp_core::customer::Customer;
use bp_core::ids::{CustomerId, PasskeyId};
use bp_core::sca::{Sca, ScaError};
use bp_core::security::{AuditKind, Passkey};
use bp_core::transient::{Spend, StateKind, Transient, TransientKind};
use serde::{Deserialize, Serialize};
use url::{Host, Url};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, PasskeyRegistration as RegistrationState, PublicKeyCredential,
    RegisterPublicKeyCredential, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::auth::Provider;
use crate::auth::crypto::sha256;
use crate::auth::login::{Claimant, claimant, complete, save, take_tx};
use crate::auth::pages::password_page;
use crate::http::client::ClientAddr;
use crate::http::problem::ApiError;

/// Passkey registrations in progress at most per customer.
const REGISTRATIONS_MAX: usize = 3;
/// Bytes of a credential JSON the sign-in form takes at most (an assertion is well under 4 KiB;
/// a registration's attestation under 16 KiB, bounded by the API's body limit).
const ASSERTION_JSON_BYTES_MAX: usize = 16 * 1024;
/// What every refused passkey sign-in answers — an unknown username, a passkey of someone else,
/// a removed passkey, a wrong signature, a throttled or locked-out username — so that none tells
/// which it was.
pub const PASSKEY_FAILED: &str = "That passkey was not accepted for this username. After several failed attempts, \
                                  sign-in from this address is paused for a while.";
/// The methods (RFC 8176) of a passkey sign-in: a hardware-secured key, and several factors
/// (the authenticator's user verification).
pub const PASSKEY_AMR: [&str; 2] = ["hwk", "mfa"];

/// The slot of a ceremony whose record is keyed `key` among its owner's in progress.
pub(super) fn slot(key: &[u8; 32]) -> [u8; 8] {
    let mut slot = [0; 8];
    slot.copy_from_slice(&key[..8]);
    slot
}

/// A registration waiting for its credential, kept in the security store as a transient
/// record (`TransientKind::PasskeyRegistration`, keyed by the SHA-256 of its id) so that any
/// server process finishes it, once. The verifier's state holds the challenge: it stays on the
/// server side (the reason webauthn-rs guards its serialisation behind a feature).
#[derive(Debug, Serialize, Deserialize)]
struct Registering {
    customer: CustomerId,
    name: String,
    state: RegistrationState,
}

/// A sign-in ceremony waiting for its assertion, for one sign-in page: kept in the page's
/// sign-in (`login::LoginTx`), in the security store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SigningIn {
    username: String,
    state: DiscoverableAuthentication,
}

/// The Relying Party. Its ceremonies in progress are in the security store.
#[derive(Debug)]
pub struct Passkeys {
    /// The verifier, or why passkeys are off (the RP ID would be an IP literal).
    rp: Result<Webauthn, String>,
}

/// The RP ID of a server reached at `public_url`: its host, when that is a domain name.
pub fn rp_id(public_url: &str) -> Result<String, String> {
    let url = Url::parse(public_url).map_err(|e| format!("the public URL {public_url} is not a URL: {e}"))?;
    match url.host() {
        Some(Host::Domain(domain)) => Ok(domain.to_owned()),
        _ => Err(format!(
            "passkeys need the server to be reached by a domain name, and {public_url} is an IP address: \
             set server.public_url (for the demo, http://localhost:PORT)"
        )),
    }
}

impl Passkeys {
    /// The Relying Party of a server reached at `public_url` (the issuer), whose ceremonies time
    /// out after `ttl`.
    pub fn new(public_url: &str, ttl: chrono::Duration) -> Self {
        let rp = rp_id(public_url).and_then(|id| {
            let origin = Url::parse(public_url).map_err(|e| e.to_string())?;
            let timeout = std::time::Duration::from_secs(u64::try_from(ttl.num_seconds()).unwrap_or(300));
            WebauthnBuilder::new(&id, &origin)
                .and_then(|b| b.rp_name("bp").timeout(timeout).build())
                .map_err(|e| format!("passkeys: {e}"))
        });
        Self { rp }
    }

    fn rp(&self) -> Result<&Webauthn, ApiError> {
        self.rp.as_ref().map_err(|why| ApiError::PasskeysUnavailable(why.clone()))
    }

    /// Begins registering a passkey named `name` for `customer` (the caller made sure the sign-in
    /// is recent, [`Sca::may_begin_passkey`]): the options to create it with. User verification
    /// is required, a discoverable credential too (the sign-in finds it without a list), and the
    /// customer's passkeys are excluded (an authenticator holding one refuses to make another).
    pub async fn begin_registration(
        &self,
        guard: &Provider,
        sca: &Sca,
        customer: &Customer,
        name: String,
    ) -> Result<PasskeyRegistration, ApiError> {
        let rp = self.rp()?;
        let existing = sca.passkeys(customer.id).await?;
        let exclude = existing.iter().map(|p| p.credential_id.clone()).collect::<Vec<_>>();
        let (options, state) = rp
            .start_passkey_registration(
                *customer.id.as_uuid(),
                customer.username.as_str(),
                &customer.display_name(),
                Some(exclude),
            )
            .map_err(|_| ApiError::Internal)?;
        let mut options = serde_json::to_value(&options).map_err(|_| ApiError::Internal)?;
        // A discoverable credential: the sign-in asks without a list of credential ids. (The
        // verifier does not check residency; the options tell the authenticator.)
        if let Some(selection) =
            options.pointer_mut("/publicKey/authenticatorSelection").and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".to_owned(), "required".into());
            selection.insert("requireResidentKey".to_owned(), true.into());
        }
        let now = sca.now();
        let expires_at = now + sca.rules().challenge_ttl();
        let id = PasskeyId::new_v7();
        let key = sha256(id.as_uuid().as_bytes());
        let customer_key = customer.id.as_uuid().as_bytes().to_vec();
        if !guard
            .take_slot(StateKind::PasskeyRegistrations, &customer_key, slot(&key), expires_at, REGISTRATIONS_MAX)
            .await?
        {
            return Err(ScaError::TooMany(format!(
                "at most {REGISTRATIONS_MAX} passkey registrations at a time; finish one first"
            ))
            .into());
        }
        let registering = Registering { customer: customer.id, name: name.clone(), state };
        let record = Transient {
            kind: TransientKind::PasskeyRegistration,
            key,
            value: serde_json::to_vec(&registering).map_err(|_| ApiError::Internal)?,
            expires_at,
            spent: false,
        };
        sca.store().put_transient(record).await?;
        Ok(PasskeyRegistration { id, name, expires_at, options })
    }

    /// Finishes `customer`'s registration `id` with the authenticator's `credential`: the
    /// registration is spent by this first answer, right or wrong; the credential must answer
    /// its challenge, come from this origin, carry user verification. Registered and audited by
    /// [`Sca::add_passkey`].
    pub async fn finish_registration(
        &self,
        guard: &Provider,
        sca: &Sca,
        customer: CustomerId,
        id: PasskeyId,
        credential: &PasskeyCredential,
    ) -> Result<Passkey, ApiError> {
        let rp = self.rp()?;
        let now = sca.now();
        let key = sha256(id.as_uuid().as_bytes());
        let decode = |t: &Transient| serde_json::from_slice::<Registering>(&t.value).map_err(|_| ApiError::Internal);
        // Another customer's registration is not found, and not spent by this answer.
        let theirs = sca.store().transient(TransientKind::PasskeyRegistration, key).await?;
        if theirs.as_ref().map(decode).transpose()?.is_none_or(|r| r.customer != customer) {
            return Err(ApiError::NotFound("passkey registration"));
        }
        let registering = match sca.store().spend_transient(TransientKind::PasskeyRegistration, key, now).await? {
            Spend::First(t) => decode(&t)?,
            Spend::Expired => return Err(ApiError::ChallengeClosed("the passkey registration expired; start again")),
            Spend::Again(_) | Spend::Unknown => return Err(ApiError::NotFound("passkey registration")),
        };
        guard.free_slot(StateKind::PasskeyRegistrations, customer.as_uuid().as_bytes(), slot(&key)).await?;
        let response: RegisterPublicKeyCredential = serde_json::from_value(credential.0.clone())
            .map_err(|_| ApiError::PasskeyRefused("the credential is not a WebAuthn registration response"))?;
        let made = rp
            .finish_passkey_registration(&response, &registering.state)
            .map_err(|e| ApiError::PasskeyRefused(refusal(&e)))?;
        let record = serde_json::to_value(&made).map_err(|_| ApiError::Internal)?;
        let passkey = Passkey {
            id,
            customer_id: customer,
            name: registering.name,
            credential_id: made.cred_id().to_vec(),
            credential: record,
            created_at: now,
            last_used_at: None,
        };
        Ok(sca.add_passkey(passkey).await?)
    }

    /// Options for a passkey sign-in by `username`, and the ceremony to keep with the page.
    fn begin_sign_in(&self, username: &str) -> Result<(serde_json::Value, SigningIn), ApiError> {
        let (mut options, state) = self.rp()?.start_discoverable_authentication().map_err(|_| ApiError::Internal)?;
        // A button press, not the browser's autofill (conditional mediation).
        options.mediation = None;
        let options = serde_json::to_value(&options).map_err(|_| ApiError::Internal)?;
        Ok((options, SigningIn { username: username.to_owned(), state }))
    }
}

/// Words for a refused ceremony: what the customer can act on, nothing internal.
fn refusal(e: &WebauthnError) -> &'static str {
    match e {
        WebauthnError::UserNotVerified => {
            "the authenticator did not verify the user (a biometric or a PIN is required)"
        }
        WebauthnError::InvalidRPOrigin | WebauthnError::InvalidRPIDHash => {
            "the credential was made for another site than this one"
        }
        WebauthnError::MismatchedChallenge => "the credential answers another registration",
        _ => "the credential is not valid",
    }
}

/// The sign-in page's request for passkey options.
#[derive(Debug, Deserialize)]
pub struct OptionsForm {
    tx: String,
    username: String,
}

/// `POST /oauth2/login/passkey/options`: WebAuthn request options for the sign-in page `tx`
/// (bound to its cookie, like the page's forms). The same for every username.
pub async fn sign_in_options(
    State(state): State<Arc<Provider>>,
    client_addr: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<OptionsForm>,
) -> Response {
    let (version, mut tx) = match take_tx(&state, &headers, &form.tx).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    if let Err(e) = state.rate_limit(client_addr.source()).await {
        return e.into_response();
    }
    let (options, ceremony) = match state.passkeys.begin_sign_in(form.username.trim()) {
        Ok(begun) => begun,
        Err(e) => return e.into_response(),
    };
    // Replaces any earlier ceremony of the page; a swap lost to another request of the page
    // (which changed it first) is refused, and the page asks again.
    tx.passkey = Some(ceremony);
    match save(&state, &form.tx, version, &tx).await {
        Ok(true) => ([(header::CACHE_CONTROL, "no-store")], Json(options)).into_response(),
        Ok(false) => ApiError::Unavailable.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The sign-in page's passkey form: the browser's assertion as JSON.
#[derive(Debug, Deserialize)]
pub struct PasskeyForm {
    tx: String,
    credential: String,
}

/// `POST /oauth2/login/passkey`: signs in with the assertion of the ceremony that
/// `/oauth2/login/passkey/options` began for this page. Refusals count like wrong passwords
/// towards the (username, source) throttle; one that only a holder of the passkey's key could
/// cause (a valid signature whose counter went back) counts towards the customer's lockout too,
/// as a wrong second factor does. Anything else does not, so that someone who knows only a
/// username cannot lock its owner out.
pub async fn sign_in(
    State(state): State<Arc<Provider>>,
    client_addr: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<PasskeyForm>,
) -> Response {
    let (version, mut tx) = match take_tx(&state, &headers, &form.tx).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let client_name = state.client(tx.client_id()).map(|c| c.name.clone()).unwrap_or_default();
    let source = client_addr.source();
    if let Err(e) = state.rate_limit(source).await {
        return e.into_response();
    }
    let now = state.now();
    // The ceremony is spent by this answer, right or wrong: taken out of the page's sign-in by a
    // swap, which one of two concurrent answers wins.
    let ceremony = tx.passkey.take();
    let version = match save(&state, &form.tx, version, &tx).await {
        Ok(true) => version + 1,
        Ok(false) => return ApiError::Unavailable.into_response(),
        Err(e) => return e.into_response(),
    };
    let typed = ceremony.as_ref().map(|c| c.username.clone());
    let failed = || Html(password_page(&client_name, &form.tx, typed.as_deref(), Some(PASSKEY_FAILED))).into_response();
    let Some(ceremony) = ceremony else { return failed() };
    let username = ceremony.username.clone();
    let Claimant { customer_id, refused, locked, _guard } = claimant(&state, &username, source).await;
    let outcome = match customer_id {
        Some(id) if !refused && !locked => verify(&state, id, ceremony, &form.credential).await,
        _ => Err(Refused::Plain),
    };
    let (passkey_id, record) = match outcome {
        Ok(verified) => verified,
        Err(Refused::Store(e)) => return e.into_response(),
        Err(why) => {
            metrics::counter!("bp_logins_total", "outcome" => "failed").increment(1);
            let detail = serde_json::json!({ "client_id": tx.client_id(), "method": "passkey" });
            if refused || locked {
                state.audit(AuditKind::LockedOutAttempt, customer_id, detail).await.ok();
                return failed();
            }
            if let (Refused::ByHolder, Some(id)) = (&why, customer_id) {
                if let Err(e) = state.sca.record_failure(id, AuditKind::SecondFactorFailed).await {
                    return ApiError::from(e).into_response();
                }
            } else {
                state.audit(AuditKind::SecondFactorFailed, customer_id, detail).await.ok();
            }
            match state.password_failed(&username, source).await {
                Ok(Some(lock_s)) => {
                    let detail = serde_json::json!({ "scope": "username_and_source", "lock_s": lock_s });
                    state.audit(AuditKind::LockedOut, customer_id, detail).await.ok();
                }
                Ok(None) => {}
                Err(e) => return e.into_response(),
            }
            return failed();
        }
    };
    let Some(customer_id) = customer_id else { return failed() };
    if let Err(e) = state.password_passed(&username, source).await {
        return e.into_response();
    }
    let amr: Vec<String> = PASSKEY_AMR.iter().map(|m| (*m).to_owned()).collect();
    let detail = serde_json::json!({ "client_id": tx.client_id(), "amr": amr, "passkey": passkey_id.to_string() });
    if let Err(e) = state.sca.signed_in_with_passkey(customer_id, passkey_id, record, detail).await {
        return ApiError::from(e).into_response();
    }
    complete(&state, &form.tx, version, tx, customer_id, amr, now).await
}

/// Why a passkey sign-in was refused.
#[derive(Debug)]
enum Refused {
    /// Anyone could have sent it (no such passkey of this customer, a malformed or wrongly signed
    /// answer): counted against the (username, source) pair only.
    Plain,
    /// A valid signature of the customer's passkey that still fails (its signature counter went
    /// back: a cloned authenticator): only a holder of the key could send it.
    ByHolder,
    /// The store failed.
    Store(ApiError),
}

/// Checks the assertion `credential_json` against `customer`'s passkeys: the passkey used and
/// the verifier's updated record of it.
async fn verify(
    state: &Provider,
    customer: CustomerId,
    ceremony: SigningIn,
    credential_json: &str,
) -> Result<(PasskeyId, serde_json::Value), Refused> {
    let rp = state.passkeys.rp().map_err(Refused::Store)?;
    if credential_json.len() > ASSERTION_JSON_BYTES_MAX {
        return Err(Refused::Plain);
    }
    let assertion: PublicKeyCredential = serde_json::from_str(credential_json).map_err(|_| Refused::Plain)?;
    let stored = state
        .security
        .passkey_by_credential(assertion.get_credential_id())
        .await
        .map_err(|e| Refused::Store(e.into()))?
        .filter(|p| p.customer_id == customer)
        .ok_or(Refused::Plain)?;
    // The user handle, when the authenticator gives one, is the customer's id it was made for.
    if assertion.get_user_unique_id().is_some_and(|h| h != customer.as_uuid().as_bytes()) {
        return Err(Refused::Plain);
    }
    let mut key: webauthn_rs::prelude::Passkey =
        serde_json::from_value(stored.credential.clone()).map_err(|_| Refused::Store(ApiError::Internal))?;
    // The verifier checks the user-verification flag before the signature, so only a counter gone
    // back (checked after the signature) proves the answer came from the authenticator's key.
    let result = rp.finish_discoverable_authentication_v2(&assertion, ceremony.state, &key).map_err(|e| match e {
        WebauthnError::CredentialPossibleCompromise => Refused::ByHolder,
        _ => Refused::Plain,
    })?;
    if !result.user_verified() {
        return Err(Refused::Plain);
    }
    key.update_credential(&result);
    let record = serde_json::to_value(&key).map_err(|_| Refused::Store(ApiError::Internal))?;
    Ok((stored.id, record))
}
