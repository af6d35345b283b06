//! The cryptographic building blocks: random tokens, hashes, password hashing (Argon2id),
//! TOTP (RFC 6238) and ECDSA P-256 device signatures. All comparisons of secrets are constant
//! time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// TOTP period in seconds.
pub const TOTP_STEP_S: u64 = 30;
/// TOTP digits.
pub const TOTP_DIGITS: usize = 6;

/// `len` random bytes from the operating system's generator, base64url without padding.
pub fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Base64url without padding.
pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding; `None` when malformed.
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()
}

/// Constant-time equality.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The Argon2id hasher with the configured cost (OWASP: m=19 MiB, t=2, p=1).
#[derive(Clone, Debug)]
pub struct PasswordHasherConfig {
    params: Params,
}

impl PasswordHasherConfig {
    /// Memory in KiB and passes, one lane.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, String> {
        Params::new(memory_kib, iterations, 1, None).map(|params| Self { params }).map_err(|e| e.to_string())
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string of `password` with a fresh salt.
    pub fn hash(&self, password: &str) -> Result<String, String> {
        let salt = SaltString::encode_b64(&random_bytes(16)).map_err(|e| e.to_string())?;
        self.argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    }

    /// Whether `password` matches `phc` (its own parameters are used).
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => self.argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }
}

/// The TOTP code of `secret` at time step `step` (RFC 6238 with SHA-1, 6 digits, as every
/// authenticator app supports).
pub fn totp_code(secret: &[u8], step: u64) -> String {
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, TOTP_DIGITS, 1, TOTP_STEP_S, secret.to_vec());
    totp.generate(step.saturating_mul(TOTP_STEP_S))
}

/// The time step of a code that matches `code` within one step of `now_s` and is later than
/// `last_step` (so a code is accepted once).
pub fn totp_accept(secret: &[u8], code: &str, now_s: u64, last_step: Option<u64>) -> Option<u64> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now_step = now_s / TOTP_STEP_S;
    let mut found = None;
    // Check every candidate step, so that the time taken does not tell which one matched.
    for step in [now_step.saturating_sub(1), now_step, now_step.saturating_add(1)] {
        if ct_eq(totp_code(secret, step).as_bytes(), code.as_bytes()) && last_step.is_none_or(|l| step > l) {
            found = Some(step);
        }
    }
    found
}

/// The `otpauth://` URI an authenticator app scans (issuer and account are URL-safe names).
pub fn totp_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let query = serde_urlencoded::to_string([
        ("secret", totp_base32(secret).as_str()),
        ("issuer", issuer),
        ("algorithm", "SHA1"),
        ("digits", "6"),
        ("period", "30"),
    ])
    .unwrap_or_default();
    let encode =
        |s: &str| serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').to_owned();
    // The label is issuer:account with a literal colon, as the Key URI format shows it.
    format!("otpauth://totp/{}:{}?{query}", encode(issuer), encode(account))
}

/// Base32 of a TOTP secret, as authenticator apps take it.
pub fn totp_base32(secret: &[u8]) -> String {
    totp_rs::Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

/// Parses a SEC1-encoded P-256 public key.
pub fn p256_public_key(sec1: &[u8]) -> Option<VerifyingKey> {
    VerifyingKey::from_sec1_bytes(sec1).ok()
}

/// Whether `signature` (DER, or 64-byte r‖s as WebCrypto makes it) is `key`'s ECDSA P-256
/// SHA-256 signature of `message`.
pub fn p256_verify(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let sig = if signature.len() == 64 { Signature::from_slice(signature) } else { Signature::from_der(signature) };
    match sig {
        // Normalising low-S keeps both encodings of one signature equivalent.
        Ok(sig) => key.verify(message, &sig.normalize_s().unwrap_or(sig)).is_ok(),
        Err(_) => false,
    }
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
    fn passwords_verify_only_themselves() {
        let h = PasswordHasherConfig::new(8 * 1024, 1).expect("params");
        let phc = h.hash("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"));
        assert!(h.verify(&phc, "correct horse"));
        assert!(!h.verify(&phc, "correct horsE"));
        assert!(!h.verify("not a hash", "correct horse"));
    }

    #[test]
    fn device_signatures_in_der_and_raw_form() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let public = key.verifying_key().to_encoded_point(false);
        let vk = p256_public_key(public.as_bytes()).expect("public key");
        let sig: Signature = key.sign(b"pay 10.00 EUR");
        assert!(p256_verify(&vk, b"pay 10.00 EUR", sig.to_der().as_bytes()));
        assert!(p256_verify(&vk, b"pay 10.00 EUR", &sig.to_bytes()));
        assert!(!p256_verify(&vk, b"pay 99.00 EUR", &sig.to_bytes()));
        assert!(!p256_verify(&vk, b"pay 10.00 EUR", b"junk"));
    }
}
