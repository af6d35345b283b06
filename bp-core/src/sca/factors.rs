//! Checking the possession factors: a device key's ECDSA P-256 signature (the key held by
//! Android Keystore or the iOS Secure Enclave, unlocked by the phone's biometrics), and TOTP
//! codes (RFC 6238, as every authenticator app makes them). Pure computation: the secrets and
//! keys come from the caller, the time too. Every comparison of a secret is constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use subtle::ConstantTimeEq as _;

/// TOTP period in seconds.
pub const TOTP_STEP_S: u64 = 30;
/// TOTP digits.
pub const TOTP_DIGITS: usize = 6;
/// Length of a device's public key: SEC1 uncompressed P-256 (0x04, x, y).
pub const DEVICE_KEY_LEN: usize = 65;

/// Base64url without padding, as keys and signatures travel in the API.
pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding; `None` when malformed.
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()
}

/// Constant-time equality of two secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A device's public key: a point of P-256, from its SEC1 encoding.
#[derive(Clone, Debug)]
pub struct DeviceKey(VerifyingKey);

impl DeviceKey {
    /// The key encoded `sec1` (65 bytes uncompressed, as devices register them); `None` when
    /// it is not a point of P-256.
    pub fn from_sec1(sec1: &[u8]) -> Option<Self> {
        VerifyingKey::from_sec1_bytes(sec1).ok().map(Self)
    }

    /// Whether `signature` (DER, or the 64-byte r‖s that WebCrypto makes) is this key's ECDSA
    /// P-256 / SHA-256 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let sig = if signature.len() == 64 { Signature::from_slice(signature) } else { Signature::from_der(signature) };
        match sig {
            // Normalising to low S keeps both encodings of one signature equivalent.
            Ok(sig) => self.0.verify(message, &sig.normalize_s().unwrap_or(sig)).is_ok(),
            Err(_) => false,
        }
    }

    /// Whether `signature_b64` (base64url without padding) is this key's signature of `message`.
    pub fn verifies_b64(&self, message: &[u8], signature_b64: &str) -> bool {
        unb64(signature_b64).is_some_and(|sig| self.verifies(message, &sig))
    }
}

/// The TOTP code of `secret` at time step `step` (RFC 6238 with SHA-1 and 6 digits, which
/// every authenticator app supports).
pub fn totp_code(secret: &[u8], step: u64) -> String {
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, TOTP_DIGITS, 1, TOTP_STEP_S, secret.to_vec());
    totp.generate(step.saturating_mul(TOTP_STEP_S))
}

/// The time step of the code that matches `code` within one step of `now_s` (seconds since
/// the epoch) and is later than `last_step`, so that a code is accepted once.
pub fn totp_accept(secret: &[u8], code: &str, now_s: u64, last_step: Option<u64>) -> Option<u64> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now_step = now_s / TOTP_STEP_S;
    let mut found = None;
    // Every candidate step is checked, so that the time taken does not tell which one matched.
    for step in [now_step.saturating_sub(1), now_step, now_step.saturating_add(1)] {
        if ct_eq(totp_code(secret, step).as_bytes(), code.as_bytes()) && last_step.is_none_or(|l| step > l) {
            found = Some(step);
        }
    }
    found
}

/// The base32 form of a TOTP secret, as authenticator apps take it.
pub fn totp_base32(secret: &[u8]) -> String {
    totp_rs::Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;

    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1 seed, truncated to 6 digits.
        let secret = b"12345678901234567890";
        for (t, code) in [(59u64, "287082"), (1_111_111_109, "081804"), (1_234_567_890, "005924")] {
            assert_eq!(totp_code(secret, t / TOTP_STEP_S), code);
        }
    }

    #[test]
    fn totp_accepts_a_code_once_and_within_one_step() {
        let secret = b"12345678901234567890";
        let now = 1_234_567_890;
        let code = totp_code(secret, now / TOTP_STEP_S);
        let step = totp_accept(secret, &code, now, None).expect("current code");
        assert_eq!(totp_accept(secret, &code, now, Some(step)), None, "a code is accepted once");
        assert!(totp_accept(secret, &code, now + 30, None).is_some(), "one step late is fine");
        assert_eq!(totp_accept(secret, &code, now + 90, None), None, "three steps late is not");
        assert_eq!(totp_accept(secret, "12345", now, None), None);
        assert_eq!(totp_accept(secret, "abcdef", now, None), None);
    }

    #[test]
    fn device_signatures_in_der_and_raw_form() {
        let key = SigningKey::from_slice(&[7u8; 32]).expect("a valid scalar");
        let public = key.verifying_key().to_encoded_point(false);
        assert_eq!(public.as_bytes().len(), DEVICE_KEY_LEN);
        let device = DeviceKey::from_sec1(public.as_bytes()).expect("public key");
        let sig: Signature = key.sign(b"pay 10.00 EUR");
        assert!(device.verifies(b"pay 10.00 EUR", sig.to_der().as_bytes()));
        assert!(device.verifies(b"pay 10.00 EUR", &sig.to_bytes()));
        assert!(device.verifies_b64(b"pay 10.00 EUR", &b64(&sig.to_bytes())));
        assert!(!device.verifies(b"pay 99.00 EUR", &sig.to_bytes()));
        assert!(!device.verifies(b"pay 10.00 EUR", b"junk"));
        assert!(!device.verifies_b64(b"pay 10.00 EUR", "not base64!"));
        assert!(DeviceKey::from_sec1(&[4u8; DEVICE_KEY_LEN]).is_none(), "not a point of the curve");
    }
}
