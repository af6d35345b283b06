//! The cryptographic building blocks of the server: random tokens, hashes and password hashing
//! (Argon2id), and the `otpauth://` URI of a TOTP secret. Checking the possession factors
//! (device-key signatures, TOTP codes) is bp-core's ([`bp_core::sca::factors`]), re-exported here
//! for the server's callers. All comparisons of secrets are constant time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
pub use bp_core::sca::factors::{TOTP_DIGITS, TOTP_STEP_S, b64, ct_eq, totp_base32, totp_code, unb64};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// `len` random bytes from the operating system's generator, base64url without padding.
pub fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    b64(&bytes)
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

/// The `otpauth://` URI an authenticator app scans (issuer and account are URL-safe names).
pub fn totp_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let (digits, period) = (TOTP_DIGITS.to_string(), TOTP_STEP_S.to_string());
    let query = serde_urlencoded::to_string([
        ("secret", totp_base32(secret).as_str()),
        ("issuer", issuer),
        ("algorithm", "SHA1"),
        ("digits", digits.as_str()),
        ("period", period.as_str()),
    ])
    .unwrap_or_default();
    let encode =
        |s: &str| serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').to_owned();
    // The label is issuer:account with a literal colon, as the Key URI format shows it.
    format!("otpauth://totp/{}:{}?{query}", encode(issuer), encode(account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = PasswordHasherConfig::new(8 * 1024, 1).expect("params");
        let phc = h.hash("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"));
        assert!(h.verify(&phc, "correct horse"));
        assert!(!h.verify(&phc, "correct horsE"));
        assert!(!h.verify("not a hash", "correct horse"));
    }
}
