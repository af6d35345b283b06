//! Security records and the store that keeps them: credentials, device keys, sign-in sessions
//! (refresh-token families, revocations, last activity), strong-customer-authentication challenges, trusted beneficiaries,
//! per-customer lockout and exemption counters, profile photos, and the append-only audit log.
//!
//! The rules that use these records (password and TOTP checks, token rotation, dynamic linking,
//! exemptions) live with the authorization server; this module only says what is kept and makes
//! the few state changes that must be atomic (rotating a refresh token, answering a challenge)
//! single store operations.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::account_number::AccountNumber;
use crate::error::StoreError;
use crate::ids::{BeneficiaryId, ChallengeId, CustomerId, DeviceId, PasskeyId, SessionId, TransferId};
use crate::money::{Currency, Money};
use crate::transient::{SharedState, Spend, StateKind, Transient, TransientKind, spend_of};

/// Upper bound of a device's or beneficiary's display name, in characters.
pub const NAME_CHARS_MAX: usize = 100;
/// Upper bound of a profile photo, in bytes.
pub const PHOTO_BYTES_MAX: usize = 512 * 1024;
/// Upper bound of the devices one customer may register.
pub const DEVICES_MAX: usize = 10;
/// Upper bound of the passkeys one customer may register.
pub const PASSKEYS_MAX: usize = 10;
/// Upper bound of a passkey's credential id, in bytes (WebAuthn allows 1023).
pub const CREDENTIAL_ID_BYTES_MAX: usize = 1023;
/// Upper bound of one customer's trusted beneficiaries.
pub const BENEFICIARIES_MAX: usize = 200;
/// Upper bound of a page of the audit log.
pub const AUDIT_PAGE_LEN_MAX: u32 = 1000;

/// What a customer knows and has: the password hash and, if enrolled, the TOTP secret.
/// Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Whose.
    pub customer_id: CustomerId,
    /// The password's Argon2id hash in PHC string format.
    pub password_hash: String,
    /// The RFC 6238 shared secret, raw bytes; `None` when the customer has no authenticator app.
    pub totp_secret: Option<Vec<u8>>,
    /// When they last changed.
    pub updated_at: Timestamp,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("customer_id", &self.customer_id)
            .field("password_hash", &"<redacted>")
            .field("totp_secret", &self.totp_secret.as_ref().map(|_| "<redacted>"))
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A device key registered by a customer: the public half of an ECDSA P-256 key pair whose
/// private half stays in the phone's keystore (Android Keystore, iOS Secure Enclave).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Id.
    pub id: DeviceId,
    /// Whose.
    pub customer_id: CustomerId,
    /// The customer's name for it ("Pixel 9").
    pub name: String,
    /// The public key, SEC1 uncompressed encoding (65 bytes).
    pub public_key: Vec<u8>,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it was removed; a removed device answers no challenge.
    pub revoked_at: Option<Timestamp>,
}

/// A passkey a customer registered: a WebAuthn credential, phishing-resistant (its authenticator
/// signs only for this site's origin) and, with the authenticator's user verification (a
/// biometric or a PIN), two factors at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passkey {
    /// Id.
    pub id: PasskeyId,
    /// Whose.
    pub customer_id: CustomerId,
    /// The customer's name for it ("MacBook Touch ID").
    pub name: String,
    /// The credential id the authenticator made (unique across customers), at most
    /// [`CREDENTIAL_ID_BYTES_MAX`] bytes.
    pub credential_id: Vec<u8>,
    /// The verifier's record of the credential (public key, algorithm, signature counter, …):
    /// opaque to the store, read and updated by the server's WebAuthn verifier.
    pub credential: serde_json::Value,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last signed a sign-in.
    pub last_used_at: Option<Timestamp>,
}

/// Where a refresh token is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshTokenState {
    /// May be exchanged once.
    Active,
    /// Was exchanged for its successor; presenting it again is reuse.
    Used,
    /// Its session was revoked.
    Revoked,
}

/// A refresh token as the server keeps it: only the SHA-256 of the opaque token, never the
/// token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// The sign-in session (token family) it belongs to.
    pub session: SessionId,
    /// Whose.
    pub customer_id: CustomerId,
    /// The OAuth2 client it was issued to.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Authentication methods of the sign-in (RFC 8176 values such as `pwd`, `otp`, `hwk`).
    pub amr: Vec<String>,
    /// When the customer signed in.
    pub auth_time: Timestamp,
    /// When this token was issued.
    pub issued_at: Timestamp,
    /// When it stops being accepted.
    pub expires_at: Timestamp,
    /// State.
    pub state: RefreshTokenState,
    /// The JWK SHA-256 thumbprint (RFC 7638) of the key the session is bound to (DPoP, RFC
    /// 9449): the token is only exchanged with a proof of that key. Every token of a session has
    /// the session's binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

/// What presenting a refresh token for rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was active: it is now used and its successor active. Carries the old token.
    Rotated(RefreshToken),
    /// It had been used before: the whole session is now revoked.
    Reused {
        /// The revoked session.
        session: SessionId,
        /// Whose.
        customer_id: CustomerId,
    },
    /// Its session is revoked.
    Revoked,
    /// It expired.
    Expired,
    /// No such token.
    Unknown,
}

/// What an SCA challenge authorizes; the device signs exactly these values (dynamic linking).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChallengePurpose {
    /// Posting a payment.
    Payment {
        /// The transfer, pending until the challenge is answered.
        transfer_id: TransferId,
        /// Amount and currency.
        amount: Money,
        /// The payee's account number.
        payee: AccountNumber,
    },
    /// Posting a payment to an account at another bank (its text is `bp-sca-v2`).
    ExternalPayment {
        /// The transfer, pending until the challenge is answered.
        transfer_id: TransferId,
        /// Amount and currency.
        amount: Money,
        /// The payee: IBAN, name and BIC, each part of the signed text.
        payee: crate::external::ExternalAccount,
    },
    /// Paying abroad with a currency conversion (its text is `bp-sca-v3`): what leaves the
    /// account, what arrives, the rate and the fee, and the payee, each part of the signed text.
    InternationalPayment {
        /// The payment's first leg, pending until the challenge is answered.
        transfer_id: TransferId,
        /// The quote accepted: source amount, fee, total debit, rate, target amount, expiry.
        quote: crate::external::fx::FxQuote,
        /// The payee: IBAN, name and BIC.
        payee: crate::external::ExternalAccount,
    },
    /// Accepting a loan's offer (its text is `bp-sca-v4`): the principal, the account it is
    /// paid into, the term, the rate, the fee, the instalment and the interest, each part of the
    /// signed text. Accepting posts the principal and opens the debt.
    LoanAcceptance {
        /// The loan (its service record), offered until the challenge is answered.
        loan_id: crate::ids::ServiceRecordId,
        /// The principal, paid into `account`.
        amount: Money,
        /// The account it is paid into and repaid from.
        account: AccountNumber,
        /// The offer, exactly as shown: rate, fee, term, instalment, interest, expiry.
        offer: crate::external::loan::LoanOffer,
    },
    /// Trusting a beneficiary (exempting later payments to it).
    Beneficiary {
        /// The beneficiary, pending until the challenge is answered.
        beneficiary_id: BeneficiaryId,
        /// The beneficiary's account number.
        payee: AccountNumber,
    },
    /// Registering a device key: it is added once the challenge is answered (by a device the
    /// customer has already, or, for a first device, by a TOTP code soon after a sign-in).
    Device {
        /// The device it will be.
        device_id: DeviceId,
        /// The customer's name for it.
        name: String,
        /// Its public key, SEC1 uncompressed P-256, base64url (as registered).
        public_key: String,
    },
}

/// How a challenge was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaMethod {
    /// A registered device key signed it.
    DeviceSignature,
    /// A TOTP code (only where the configured rules allow it).
    Totp,
}

/// Where a challenge is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChallengeState {
    /// Waiting for its answer.
    Open,
    /// Answered; the answer is spent.
    Answered {
        /// When.
        at: Timestamp,
        /// How.
        method: ScaMethod,
        /// The device that signed, for device signatures.
        device_id: Option<DeviceId>,
    },
    /// Too many wrong answers; it can no longer be answered.
    Failed,
}

/// A strong-customer-authentication challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaChallenge {
    /// Id.
    pub id: ChallengeId,
    /// Whose.
    pub customer_id: CustomerId,
    /// What it authorizes.
    pub purpose: ChallengePurpose,
    /// Random, unpredictable, part of what is signed.
    pub nonce: String,
    /// Made at.
    pub created_at: Timestamp,
    /// Unanswerable after.
    pub expires_at: Timestamp,
    /// Wrong answers so far.
    pub failures: u32,
    /// State.
    pub state: ChallengeState,
}

/// What answering a challenge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChallengeAnswer {
    /// It was open and unexpired: it is now answered. Carries the answered challenge.
    Accepted(ScaChallenge),
    /// It could not be answered; carries it as it is (answered, failed or expired).
    Refused(ScaChallenge),
    /// No such challenge.
    Unknown,
}

/// Whether a beneficiary may be paid without SCA yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BeneficiaryState {
    /// Waiting for the SCA that trusts it.
    Pending,
    /// Trusted: payments to it are exempt from SCA.
    Trusted,
}

/// A payee a customer trusts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beneficiary {
    /// Id.
    pub id: BeneficiaryId,
    /// Whose list it is on.
    pub customer_id: CustomerId,
    /// The customer's name for the payee.
    pub name: String,
    /// The payee's account number.
    pub account_number: AccountNumber,
    /// State.
    pub state: BeneficiaryState,
    /// When it was added.
    pub created_at: Timestamp,
    /// How the challenge that trusted it was answered: a device signature trusts it for any
    /// amount, a TOTP code only up to the TOTP limit (`None`: not trusted, or trusted before
    /// the method was recorded, which counts as TOTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_by: Option<ScaMethod>,
}

/// A customer's authentication failures, lockout, and the low-value exemption counters since
/// the last SCA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityState {
    /// Consecutive failed password, second-factor or challenge answers.
    pub failures: u32,
    /// Lockouts so far without a successful sign-in in between (makes lockout progressive).
    pub lockouts: u32,
    /// Locked until.
    pub locked_until: Option<Timestamp>,
    /// Payments made under the low-value exemption since the last SCA.
    pub low_value_count: u32,
    /// Their cumulative amount per currency, in minor units.
    pub low_value_total_minor: BTreeMap<Currency, i64>,
    /// The last TOTP time step accepted, so that a code is accepted once.
    #[serde(default)]
    pub totp_last_step: Option<u64>,
    /// When the last failure was: failures and lockouts are forgotten `lockout.decay_s` later.
    #[serde(default)]
    pub last_failure_at: Option<Timestamp>,
}

/// What kind of security event an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// Signed in with both factors.
    LoginSucceeded,
    /// Wrong username or password.
    PasswordFailed,
    /// Wrong TOTP code or device signature at sign-in.
    SecondFactorFailed,
    /// Locked out after repeated failures.
    LockedOut,
    /// A sign-in was refused because the customer was locked out.
    LockedOutAttempt,
    /// A device key was registered.
    DeviceAdded,
    /// A device key was removed.
    DeviceRemoved,
    /// A used refresh token was presented again; its session was revoked.
    RefreshTokenReuse,
    /// A session was revoked (sign-out).
    SessionRevoked,
    /// An SCA challenge was answered.
    ChallengeAnswered,
    /// A wrong answer to an SCA challenge.
    ChallengeFailed,
    /// A payment was exempted from SCA (the rule is in the detail).
    ScaExempted,
    /// A trusted beneficiary was added.
    BeneficiaryTrusted,
    /// A trusted beneficiary was removed.
    BeneficiaryRemoved,
    /// Credentials were set or changed.
    CredentialsChanged,
    /// An access token from the configured external issuer was accepted for the first time in a session.
    ExternalTokenAccepted,
    /// A passkey was registered.
    PasskeyAdded,
    /// A passkey was removed.
    PasskeyRemoved,
}

/// One entry of the append-only audit log. It names the customer by id and never holds a
/// secret (no password, code, token or signature) or a document number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// Position in the log, assigned by the store (1, 2, …).
    pub position: u64,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: AuditKind,
    /// Whose, when known.
    pub customer_id: Option<CustomerId>,
    /// Free-form, secret-free context (client id, device id, rule, remote address).
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// A stored profile photo.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Photo {
    /// Media type (`image/png`, `image/jpeg`, `image/svg+xml`).
    pub content_type: String,
    /// The bytes, at most [`PHOTO_BYTES_MAX`].
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Photo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Photo").field("content_type", &self.content_type).field("len", &self.bytes.len()).finish()
    }
}

/// Keeps the security records. Every method is one atomic store operation.
///
/// Errors: any method may fail for the store's own reasons ([`StoreErrorKind`](crate::StoreErrorKind)
/// `Unavailable`, `Overloaded`, `Closed`, `Corrupt`, and for a write `StorageFull` or `ReadOnly`);
/// the kinds a method returns because of the request itself are named on it, and a method that
/// names none has none.
#[async_trait]
pub trait SecurityStore: Send + Sync + 'static {
    /// Sets (inserts or replaces) a customer's credentials.
    async fn put_credentials(&self, credentials: Credentials) -> Result<(), StoreError>;
    /// A customer's credentials.
    async fn credentials(&self, customer: CustomerId) -> Result<Option<Credentials>, StoreError>;

    /// Registers a device; `Conflict`, changing nothing, when its id is taken.
    async fn add_device(&self, device: Device) -> Result<(), StoreError>;
    /// A device by id.
    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError>;
    /// A customer's devices, removed ones included, oldest first (by `created_at`, ties in the
    /// order they were added).
    async fn devices_of(&self, customer: CustomerId) -> Result<Vec<Device>, StoreError>;
    /// Marks a device removed; false when it is not the customer's or already removed.
    async fn revoke_device(&self, customer: CustomerId, id: DeviceId, at: Timestamp) -> Result<bool, StoreError>;

    /// Stores a new refresh token (the first of a session); `Conflict`, changing nothing, when a
    /// token with its hash exists.
    async fn insert_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError>;
    /// Atomically exchanges the token hashed `old` for `new` (of the same session), at `now`,
    /// deciding with [`rotation_of`]: `Rotated` stores `new` and marks the old token used;
    /// `Reused` revokes the whole session at `now`; the other answers change nothing.
    /// When the token would rotate, changing nothing: `InvalidRequest` if `new` is of another
    /// session or another key binding (`dpop_jkt`), `Conflict` if its hash is taken (the
    /// presented token's own included).
    async fn rotate_refresh_token(
        &self,
        old: [u8; 32],
        new: RefreshToken,
        now: Timestamp,
    ) -> Result<Rotation, StoreError>;
    /// The token hashed `hash`.
    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshToken>, StoreError>;
    /// Revokes a whole session at `at`: records it revoked and revokes every refresh token of it;
    /// false, changing nothing, when it was already revoked. A session of which no refresh token
    /// is stored (one signed in without `offline_access`, whose access tokens alone are revoked)
    /// is recorded all the same, so that [`Self::sessions_revoked_since`] names it.
    async fn revoke_session(&self, session: SessionId, at: Timestamp) -> Result<bool, StoreError>;
    /// Sessions revoked at or after `since` (the server keeps them to refuse their access tokens).
    async fn sessions_revoked_since(&self, since: Timestamp) -> Result<Vec<SessionId>, StoreError>;
    /// Records that `session` was used by its customer at `at` (the inactivity limit counts from
    /// it), keeping a later time already recorded: calls may arrive out of order.
    async fn record_session_activity(&self, session: SessionId, at: Timestamp) -> Result<(), StoreError>;
    /// When `session` was last used, as recorded; `None` when never.
    async fn session_active_at(&self, session: SessionId) -> Result<Option<Timestamp>, StoreError>;

    /// Stores a new challenge, or replaces an open one with the same id; `InvalidRequest`,
    /// changing nothing, when the one with its id is answered or failed (a request to undo an
    /// answer, not a taken id: the same id is how a challenge is renewed).
    async fn put_challenge(&self, challenge: ScaChallenge) -> Result<(), StoreError>;
    /// A challenge by id.
    async fn challenge(&self, id: ChallengeId) -> Result<Option<ScaChallenge>, StoreError>;
    /// Atomically marks an open, unexpired challenge answered (deciding with [`answer_of`]).
    async fn answer_challenge(
        &self,
        id: ChallengeId,
        method: ScaMethod,
        device_id: Option<DeviceId>,
        now: Timestamp,
    ) -> Result<ChallengeAnswer, StoreError>;
    /// Counts a wrong answer to an open challenge; at `failures_max` it fails. An answered or
    /// failed challenge is left as it is. Returns it as it is now (`None` when unknown).
    async fn fail_challenge(&self, id: ChallengeId, failures_max: u32) -> Result<Option<ScaChallenge>, StoreError>;

    /// Registers a passkey; `Conflict`, changing nothing, when its id or its credential id is
    /// taken.
    async fn add_passkey(&self, passkey: Passkey) -> Result<(), StoreError>;
    /// A customer's passkeys, oldest first (by `created_at`, ties in the order they were added).
    async fn passkeys_of(&self, customer: CustomerId) -> Result<Vec<Passkey>, StoreError>;
    /// The passkey with the WebAuthn credential id `credential_id`.
    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<Passkey>, StoreError>;
    /// Records a sign-in by passkey `id` at `at`, with the verifier's updated record of the
    /// credential (its signature counter); false when there is no such passkey.
    async fn passkey_used(
        &self,
        id: PasskeyId,
        credential: serde_json::Value,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Deletes a passkey of the customer; false when there was none.
    async fn remove_passkey(&self, customer: CustomerId, id: PasskeyId) -> Result<bool, StoreError>;

    /// Inserts or replaces a beneficiary.
    async fn put_beneficiary(&self, beneficiary: Beneficiary) -> Result<(), StoreError>;
    /// A beneficiary by id.
    async fn beneficiary(&self, id: BeneficiaryId) -> Result<Option<Beneficiary>, StoreError>;
    /// A customer's beneficiaries, oldest first (by `created_at`, ties in the order they were
    /// first added).
    async fn beneficiaries_of(&self, customer: CustomerId) -> Result<Vec<Beneficiary>, StoreError>;
    /// Deletes a beneficiary of the customer; false when there was none.
    async fn delete_beneficiary(&self, customer: CustomerId, id: BeneficiaryId) -> Result<bool, StoreError>;

    /// A customer's lockout and exemption state (the default when none is stored).
    async fn security_state(&self, customer: CustomerId) -> Result<SecurityState, StoreError>;
    /// Replaces a customer's lockout and exemption state.
    async fn put_security_state(&self, customer: CustomerId, state: SecurityState) -> Result<(), StoreError>;

    /// Sets a customer's photo; `InvalidRequest`, changing nothing, when it is over
    /// [`PHOTO_BYTES_MAX`].
    async fn put_photo(&self, customer: CustomerId, photo: Photo) -> Result<(), StoreError>;
    /// A customer's photo.
    async fn photo(&self, customer: CustomerId) -> Result<Option<Photo>, StoreError>;

    /// Appends to the audit log (the entry's `position` is ignored); returns the position given.
    async fn append_audit(&self, entry: AuditEntry) -> Result<u64, StoreError>;
    /// Audit entries after `position`, oldest first, at most `limit` (≤ [`AUDIT_PAGE_LEN_MAX`]).
    async fn audit_after(&self, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// The audit entries naming `customer` after `position`, oldest first, at most `limit`
    /// (≤ [`AUDIT_PAGE_LEN_MAX`]): a customer's security events, read without reading everyone
    /// else's.
    async fn audit_of(&self, customer: CustomerId, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// The position of the latest audit entry; 0 for an empty log.
    async fn audit_end(&self) -> Result<u64, StoreError>;

    /// Stores a new transient record ([`crate::transient`]); `Conflict`, changing nothing, when
    /// one of its kind and key exists; `InvalidRequest` when [`crate::transient::check_new`]
    /// refuses it.
    async fn put_transient(&self, record: Transient) -> Result<(), StoreError>;
    /// The transient record of `kind` and `key`, spent or not, until it is swept.
    async fn transient(&self, kind: TransientKind, key: [u8; 32]) -> Result<Option<Transient>, StoreError>;
    /// Spends the transient record of `kind` and `key` at `now`, atomically, deciding with
    /// [`crate::transient::spend_of`]: of concurrent spends, one is `First`.
    async fn spend_transient(&self, kind: TransientKind, key: [u8; 32], now: Timestamp) -> Result<Spend, StoreError>;
    /// Deletes the transient records and shared states that ended before `before`; returns
    /// how many (a shared state counts once, however its store keeps its versions).
    async fn sweep_transients(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// The shared state of `kind` and `key` ([`crate::transient::SharedState`]), ended or not,
    /// until it is swept.
    async fn shared_state(&self, kind: StateKind, key: [u8; 32]) -> Result<Option<SharedState>, StoreError>;
    /// Makes `value`, ending at `expires_at`, the shared state of `kind` and `key`, with version
    /// `expected + 1`, if its version is still `expected` (0: there is none), atomically
    /// ([`crate::transient::swaps`]); false, changing nothing, when another swap came first
    /// (read again and retry). `InvalidRequest` when [`crate::transient::check_swap`] refuses.
    async fn swap_shared_state(
        &self,
        kind: StateKind,
        key: [u8; 32],
        expected: u64,
        value: Vec<u8>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;
}

#[derive(Debug, Default)]
struct Inner {
    credentials: HashMap<CustomerId, Credentials>,
    devices: Vec<Device>,
    refresh_tokens: HashMap<[u8; 32], RefreshToken>,
    revoked_sessions: HashMap<SessionId, Timestamp>,
    session_activity: HashMap<SessionId, Timestamp>,
    challenges: HashMap<ChallengeId, ScaChallenge>,
    beneficiaries: Vec<Beneficiary>,
    states: HashMap<CustomerId, SecurityState>,
    passkeys: Vec<Passkey>,
    photos: HashMap<CustomerId, Photo>,
    audit: Vec<AuditEntry>,
    transients: HashMap<(TransientKind, [u8; 32]), Transient>,
    shared_states: HashMap<(StateKind, [u8; 32]), SharedState>,
}

/// A [`SecurityStore`] in memory. Cloning shares the same records.
#[derive(Clone, Debug, Default)]
pub struct MemorySecurityStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemorySecurityStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method finishes its change before it can panic; the records stay consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The rotation rule every store applies atomically: what presenting `old` does, given the
/// stored token and whether its session is revoked.
pub fn rotation_of(stored: Option<&RefreshToken>, session_revoked: bool, now: Timestamp) -> Rotation {
    match stored {
        None => Rotation::Unknown,
        Some(t) if session_revoked || t.state == RefreshTokenState::Revoked => Rotation::Revoked,
        Some(t) if t.state == RefreshTokenState::Used => {
            Rotation::Reused { session: t.session, customer_id: t.customer_id }
        }
        Some(t) if t.expires_at <= now => Rotation::Expired,
        Some(t) => Rotation::Rotated(t.clone()),
    }
}

/// Checks the successor of a token that rotates: of the same session and key binding, with a
/// hash of its own (`hash_taken`: a token with `new`'s hash is stored). Every store checks it
/// before writing: `InvalidRequest` for another session or binding, `Conflict` for a taken hash.
pub fn successor_fits(stored: &RefreshToken, new: &RefreshToken, hash_taken: bool) -> Result<(), StoreError> {
    if new.session != stored.session {
        return Err(invalid("the successor of a refresh token must be of the same session"));
    }
    if new.dpop_jkt != stored.dpop_jkt {
        return Err(invalid("the successor of a refresh token must keep its session's key binding"));
    }
    if hash_taken {
        return Err(conflict("a refresh token with the successor's hash exists"));
    }
    Ok(())
}

fn invalid(message: &'static str) -> StoreError {
    StoreError::new(crate::StoreErrorKind::InvalidRequest, message)
}

fn conflict(message: &'static str) -> StoreError {
    StoreError::new(crate::StoreErrorKind::Conflict, message)
}

/// The answering rule every store applies atomically.
pub fn answer_of(challenge: &ScaChallenge, now: Timestamp) -> bool {
    challenge.state == ChallengeState::Open && now < challenge.expires_at
}

/// The wrong-answer rule every store applies atomically: an open challenge counts the failure
/// and fails at `failures_max`; an answered or failed one stays as it is. Returns whether the
/// challenge changed.
pub fn count_failure(challenge: &mut ScaChallenge, failures_max: u32) -> bool {
    if challenge.state != ChallengeState::Open {
        return false;
    }
    challenge.failures = challenge.failures.saturating_add(1);
    if challenge.failures >= failures_max {
        challenge.state = ChallengeState::Failed;
    }
    true
}

#[async_trait]
impl SecurityStore for MemorySecurityStore {
    async fn put_credentials(&self, credentials: Credentials) -> Result<(), StoreError> {
        self.lock().credentials.insert(credentials.customer_id, credentials);
        Ok(())
    }

    async fn credentials(&self, customer: CustomerId) -> Result<Option<Credentials>, StoreError> {
        Ok(self.lock().credentials.get(&customer).cloned())
    }

    async fn add_device(&self, device: Device) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.devices.iter().any(|d| d.id == device.id) {
            return Err(conflict("a device with this id exists"));
        }
        inner.devices.push(device);
        Ok(())
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        Ok(self.lock().devices.iter().find(|d| d.id == id).cloned())
    }

    async fn devices_of(&self, customer: CustomerId) -> Result<Vec<Device>, StoreError> {
        let mut devices: Vec<Device> =
            self.lock().devices.iter().filter(|d| d.customer_id == customer).cloned().collect();
        // Stable: ties stay in the order they were added.
        devices.sort_by_key(|d| d.created_at);
        Ok(devices)
    }

    async fn revoke_device(&self, customer: CustomerId, id: DeviceId, at: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.devices.iter_mut().find(|d| d.id == id && d.customer_id == customer && d.revoked_at.is_none()) {
            Some(d) => {
                d.revoked_at = Some(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn insert_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.refresh_tokens.contains_key(&token.hash) {
            return Err(conflict("a refresh token with this hash exists"));
        }
        inner.refresh_tokens.insert(token.hash, token);
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old: [u8; 32],
        new: RefreshToken,
        now: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let mut inner = self.lock();
        let stored = inner.refresh_tokens.get(&old);
        let revoked = stored.is_some_and(|t| inner.revoked_sessions.contains_key(&t.session));
        let rotation = rotation_of(stored, revoked, now);
        match &rotation {
            Rotation::Rotated(stored) => {
                successor_fits(stored, &new, inner.refresh_tokens.contains_key(&new.hash))?;
                if let Some(t) = inner.refresh_tokens.get_mut(&old) {
                    t.state = RefreshTokenState::Used;
                }
                inner.refresh_tokens.insert(new.hash, new);
            }
            Rotation::Reused { session, .. } => {
                let session = *session;
                inner.revoked_sessions.entry(session).or_insert(now);
                for t in inner.refresh_tokens.values_mut().filter(|t| t.session == session) {
                    t.state = RefreshTokenState::Revoked;
                }
            }
            Rotation::Revoked | Rotation::Expired | Rotation::Unknown => {}
        }
        Ok(rotation)
    }

    async fn refresh_token(&self, hash: [u8; 32]) -> Result<Option<RefreshToken>, StoreError> {
        Ok(self.lock().refresh_tokens.get(&hash).cloned())
    }

    async fn revoke_session(&self, session: SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.revoked_sessions.contains_key(&session) {
            return Ok(false);
        }
        inner.revoked_sessions.insert(session, at);
        for t in inner.refresh_tokens.values_mut().filter(|t| t.session == session) {
            t.state = RefreshTokenState::Revoked;
        }
        Ok(true)
    }

    async fn sessions_revoked_since(&self, since: Timestamp) -> Result<Vec<SessionId>, StoreError> {
        Ok(self.lock().revoked_sessions.iter().filter(|(_, at)| **at >= since).map(|(s, _)| *s).collect())
    }

    async fn record_session_activity(&self, session: SessionId, at: Timestamp) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let last = inner.session_activity.entry(session).or_insert(at);
        *last = (*last).max(at);
        Ok(())
    }

    async fn session_active_at(&self, session: SessionId) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.lock().session_activity.get(&session).copied())
    }

    async fn put_challenge(&self, challenge: ScaChallenge) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.challenges.get(&challenge.id).is_some_and(|c| c.state != ChallengeState::Open) {
            return Err(invalid("a challenge that is no longer open cannot be replaced"));
        }
        inner.challenges.insert(challenge.id, challenge);
        Ok(())
    }

    async fn challenge(&self, id: ChallengeId) -> Result<Option<ScaChallenge>, StoreError> {
        Ok(self.lock().challenges.get(&id).cloned())
    }

    async fn answer_challenge(
        &self,
        id: ChallengeId,
        method: ScaMethod,
        device_id: Option<DeviceId>,
        now: Timestamp,
    ) -> Result<ChallengeAnswer, StoreError> {
        let mut inner = self.lock();
        let Some(c) = inner.challenges.get_mut(&id) else { return Ok(ChallengeAnswer::Unknown) };
        if !answer_of(c, now) {
            return Ok(ChallengeAnswer::Refused(c.clone()));
        }
        c.state = ChallengeState::Answered { at: now, method, device_id };
        Ok(ChallengeAnswer::Accepted(c.clone()))
    }

    async fn fail_challenge(&self, id: ChallengeId, failures_max: u32) -> Result<Option<ScaChallenge>, StoreError> {
        let mut inner = self.lock();
        let Some(c) = inner.challenges.get_mut(&id) else { return Ok(None) };
        count_failure(c, failures_max);
        Ok(Some(c.clone()))
    }

    async fn add_passkey(&self, passkey: Passkey) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.passkeys.iter().any(|p| p.id == passkey.id || p.credential_id == passkey.credential_id) {
            return Err(StoreError::new(
                crate::StoreErrorKind::Conflict,
                "a passkey with this id or credential id exists",
            ));
        }
        inner.passkeys.push(passkey);
        Ok(())
    }

    async fn passkeys_of(&self, customer: CustomerId) -> Result<Vec<Passkey>, StoreError> {
        let mut passkeys: Vec<Passkey> =
            self.lock().passkeys.iter().filter(|p| p.customer_id == customer).cloned().collect();
        // Stable: ties stay in the order they were added.
        passkeys.sort_by_key(|p| p.created_at);
        Ok(passkeys)
    }

    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<Passkey>, StoreError> {
        Ok(self.lock().passkeys.iter().find(|p| p.credential_id == credential_id).cloned())
    }

    async fn passkey_used(
        &self,
        id: PasskeyId,
        credential: serde_json::Value,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.passkeys.iter_mut().find(|p| p.id == id) {
            Some(p) => {
                p.credential = credential;
                p.last_used_at = Some(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn remove_passkey(&self, customer: CustomerId, id: PasskeyId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let before = inner.passkeys.len();
        inner.passkeys.retain(|p| !(p.id == id && p.customer_id == customer));
        Ok(inner.passkeys.len() != before)
    }

    async fn put_beneficiary(&self, beneficiary: Beneficiary) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.beneficiaries.iter_mut().find(|b| b.id == beneficiary.id) {
            Some(b) => *b = beneficiary,
            None => inner.beneficiaries.push(beneficiary),
        }
        Ok(())
    }

    async fn beneficiary(&self, id: BeneficiaryId) -> Result<Option<Beneficiary>, StoreError> {
        Ok(self.lock().beneficiaries.iter().find(|b| b.id == id).cloned())
    }

    async fn beneficiaries_of(&self, customer: CustomerId) -> Result<Vec<Beneficiary>, StoreError> {
        let mut beneficiaries: Vec<Beneficiary> =
            self.lock().beneficiaries.iter().filter(|b| b.customer_id == customer).cloned().collect();
        // Stable: ties stay in the order they were first added.
        beneficiaries.sort_by_key(|b| b.created_at);
        Ok(beneficiaries)
    }

    async fn delete_beneficiary(&self, customer: CustomerId, id: BeneficiaryId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let before = inner.beneficiaries.len();
        inner.beneficiaries.retain(|b| !(b.id == id && b.customer_id == customer));
        Ok(inner.beneficiaries.len() != before)
    }

    async fn security_state(&self, customer: CustomerId) -> Result<SecurityState, StoreError> {
        Ok(self.lock().states.get(&customer).cloned().unwrap_or_default())
    }

    async fn put_security_state(&self, customer: CustomerId, state: SecurityState) -> Result<(), StoreError> {
        self.lock().states.insert(customer, state);
        Ok(())
    }

    async fn put_photo(&self, customer: CustomerId, photo: Photo) -> Result<(), StoreError> {
        if photo.bytes.len() > PHOTO_BYTES_MAX {
            return Err(invalid("photo too large"));
        }
        self.lock().photos.insert(customer, photo);
        Ok(())
    }

    async fn photo(&self, customer: CustomerId) -> Result<Option<Photo>, StoreError> {
        Ok(self.lock().photos.get(&customer).cloned())
    }

    async fn append_audit(&self, mut entry: AuditEntry) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let position = u64::try_from(inner.audit.len()).unwrap_or(u64::MAX).saturating_add(1);
        entry.position = position;
        inner.audit.push(entry);
        Ok(position)
    }

    async fn audit_after(&self, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = usize::try_from(limit.min(AUDIT_PAGE_LEN_MAX)).unwrap_or(usize::MAX);
        Ok(self.lock().audit.iter().filter(|e| e.position > position).take(limit).cloned().collect())
    }

    async fn audit_of(&self, customer: CustomerId, position: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = usize::try_from(limit.min(AUDIT_PAGE_LEN_MAX)).unwrap_or(usize::MAX);
        let inner = self.lock();
        let theirs = inner.audit.iter().filter(|e| e.position > position && e.customer_id == Some(customer));
        Ok(theirs.take(limit).cloned().collect())
    }

    async fn audit_end(&self) -> Result<u64, StoreError> {
        Ok(self.lock().audit.last().map_or(0, |e| e.position))
    }

    async fn put_transient(&self, record: Transient) -> Result<(), StoreError> {
        crate::transient::check_new(&record)?;
        let mut inner = self.lock();
        match inner.transients.entry((record.kind, record.key)) {
            std::collections::hash_map::Entry::Occupied(_) => Err(conflict("a transient record with this key exists")),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(record);
                Ok(())
            }
        }
    }

    async fn transient(&self, kind: TransientKind, key: [u8; 32]) -> Result<Option<Transient>, StoreError> {
        Ok(self.lock().transients.get(&(kind, key)).cloned())
    }

    async fn spend_transient(&self, kind: TransientKind, key: [u8; 32], now: Timestamp) -> Result<Spend, StoreError> {
        let mut inner = self.lock();
        let spend = spend_of(inner.transients.get(&(kind, key)), now);
        if let Spend::First(spent) = &spend {
            inner.transients.insert((kind, key), spent.clone());
        }
        Ok(spend)
    }

    async fn sweep_transients(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let len = inner.transients.len();
        inner.transients.retain(|_, t| t.expires_at >= before);
        let states = inner.shared_states.len();
        inner.shared_states.retain(|_, s| s.expires_at >= before);
        let swept = len - inner.transients.len() + states - inner.shared_states.len();
        Ok(u64::try_from(swept).unwrap_or(u64::MAX))
    }

    async fn shared_state(&self, kind: StateKind, key: [u8; 32]) -> Result<Option<SharedState>, StoreError> {
        Ok(self.lock().shared_states.get(&(kind, key)).cloned())
    }

    async fn swap_shared_state(
        &self,
        kind: StateKind,
        key: [u8; 32],
        expected: u64,
        value: Vec<u8>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        crate::transient::check_swap(expected, &value)?;
        let mut inner = self.lock();
        if !crate::transient::swaps(inner.shared_states.get(&(kind, key)), expected) {
            return Ok(false);
        }
        let state = SharedState { kind, key, version: expected + 1, value, expires_at };
        inner.shared_states.insert((kind, key), state);
        Ok(true)
    }
}
