//! What the app provides: secure token storage, device keys, durable app storage and a listener
//! of live events. These are UniFFI foreign traits: Kotlin and Swift classes implement them
//! (on the Keystore / Keychain, the Secure Enclave, SharedPreferences / a file), and the SDK
//! only calls them.

#![forbid(unsafe_code)]

use std::sync::Arc;

/// A failure of the app's side (a keystore that refused, a biometric prompt the customer
/// cancelled, storage that could not write). Its message is the app's and is not shown by the
/// SDK's errors, which say only that the device failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum HostError {
    /// The operation failed on the device.
    #[error("the device could not do this: {reason}")]
    Failed {
        /// Why, in the app's words (no secret or personal data, please). Not `message`: that
        /// would clash with Kotlin's `Throwable.message`.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for HostError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        HostError::Failed { reason: format!("unexpected error in the app's callback: {}", e.reason) }
    }
}

/// Where the signed-in session lives between app starts: on Android the Keystore-encrypted
/// storage, on iOS the Keychain. The value is an opaque secret (it holds the refresh token):
/// store it as it is, never log it.
#[uniffi::export(foreign)]
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// The session saved last, if any.
    fn load(&self) -> Result<Option<String>, HostError>;
    /// Replaces the saved session (after sign-in and after every refresh, which rotates it).
    fn save(&self, session: String) -> Result<(), HostError>;
    /// Forgets the session (sign-out, or a session the server ended).
    fn clear(&self) -> Result<(), HostError>;
}

/// A P-256 key held by the device: the DPoP key that binds the tokens (used on every request,
/// without a prompt), or the SCA device key (unlocked by the customer's biometric for each
/// payment: possession and inherence). Android: a Keystore key (`KeyProperties.KEY_ALGORITHM_EC`,
/// `SHA256withECDSA`); iOS: a Secure Enclave key (`.ecdsaSignatureMessageX962SHA256`).
#[uniffi::export(rust, foreign)]
pub trait DeviceSigner: Send + Sync + std::fmt::Debug {
    /// The public key, SEC1 uncompressed (65 bytes: `04 ‖ x ‖ y`).
    fn public_key(&self) -> Result<Vec<u8>, HostError>;
    /// The ECDSA P-256 / SHA-256 signature of `message` (the key hashes it): DER, or 64 bytes
    /// `r ‖ s`.
    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, HostError>;
}

/// Durable app-private storage of small records (SharedPreferences, UserDefaults, a file): the
/// payments in flight with their idempotency keys, kept across app restarts, and the registered
/// device's id. Nothing secret is stored here.
#[uniffi::export(foreign)]
pub trait AppStore: Send + Sync + std::fmt::Debug {
    /// The value under `key`.
    fn get(&self, key: String) -> Result<Option<String>, HostError>;
    /// Stores `value` under `key`, durably, before returning.
    fn put(&self, key: String, value: String) -> Result<(), HostError>;
    /// Removes `key` (nothing if absent).
    fn remove(&self, key: String) -> Result<(), HostError>;
    /// The keys that start with `prefix`.
    fn keys(&self, prefix: String) -> Result<Vec<String>, HostError>;
}

/// Receives the live events of the customer's accounts (on a thread of the SDK's: hop to the
/// UI thread yourself).
#[uniffi::export(foreign)]
pub trait EventListener: Send + Sync + std::fmt::Debug {
    /// An event: `kind` (`transfer.posted`, `account.balance`, `security.sign_in`, …), its `id`
    /// (the stream's resume cursor) and `data` (its JSON).
    fn on_event(&self, event: crate::LiveEvent);
    /// The stream's state changed: connected, reconnecting after a failure, or ended.
    fn on_status(&self, status: crate::StreamStatus);
}

/// The app's handles, as the client holds them.
#[derive(Clone, Debug)]
pub(crate) struct Host {
    pub tokens: Arc<dyn TokenStore>,
    pub dpop_key: Arc<dyn DeviceSigner>,
    pub sca_key: Arc<dyn DeviceSigner>,
    pub store: Arc<dyn AppStore>,
}
